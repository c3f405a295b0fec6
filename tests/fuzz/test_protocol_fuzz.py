"""Hypothesis against the seed's JSON protocol and the agent link's protobuf messages.

The parsers first, on arbitrary bytes and on JSON of every shape: they refuse with their own
error or return something well-formed. Then the live ends, on an in-process master: the seed's
``/ImageUpload`` methods answer any body with a client error, and nothing an agent can send on
the link (random messages, before and after registering, or bytes that are no protobuf at all)
stops the master from serving the API and running tasks.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
import schemathesis
from google.protobuf import text_format
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from edgesched.errors import BadInputError
from edgesched.master.compat.intake import ScheduleError, parse_schedule, parse_upload
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import agent_pb2, agent_pb2_grpc, common_pb2

T = TypeVar("T")

PARSERS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
#: each example is a real call: fewer, and not shrunk (a hang would be shrunk call by call)
LIVE = settings(PARSERS, max_examples=40, phases=[Phase.explicit, Phase.generate])
LINK = settings(PARSERS, max_examples=40, phases=[Phase.explicit, Phase.generate])
CALL_TIMEOUT_S = 5.0
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}

# ---- JSON of every shape ------------------------------------------------------------------

#: text, sometimes with a lone surrogate: JSON may spell one ("\ud800"), UTF-8 cannot
texts = st.text(max_size=12) | st.text(max_size=6).map(lambda s: s + "\ud800")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
picture_b64 = base64.b64encode(png_bytes()).decode()
base64_texts = (
    st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
    | st.text(alphabet="AQgw=+/-_ \n%", max_size=12)
    | st.just(picture_b64)
)
task_types = st.sampled_from(["layout", " layout ", "", "yolo", "nosuch"]) | texts
upload_objects = st.fixed_dictionaries(
    {},
    optional={
        "filename": st.sampled_from(["a.png", "../x.png", ""]) | json_values,
        "content_b64": base64_texts | json_values,
        "tasktype": task_types | json_values,
        "req_id": texts | json_values,
        "total_num": st.integers() | json_values,
    },
)
file_names = st.sampled_from(["1.png", "../1.png", ""]) | texts
schedule_objects = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["127.0.0.1", ""]) | json_values,
        "tasktype": task_types | json_values,
        "filename": file_names | json_values,
        "filenames": st.lists(file_names, max_size=3) | json_values,
        "filepath": texts | json_values,
        "req_id": texts | json_values,
        "total_num": st.integers(-1, 4) | json_values,
    },
)


def encoded(value: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity included, non-ASCII escaped."""
    return json.dumps(value).encode()


def bodies_of(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return (
        st.binary(max_size=64)
        | json_values.map(encoded)
        | objects.map(encoded)
        | objects.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        | objects.map(lambda o: json.dumps(o).encode("utf-16"))
    )


#: JSON nested deeper than Python's recursion limit
DEEP = b"[" * 100_000
#: a string JSON allows and UTF-8 cannot carry, in every field a message names
SURROGATE_UPLOAD = encoded(
    {"filename": "a.png", "content_b64": picture_b64, "tasktype": "\udfff", "req_id": "\udfff"}
)
SURROGATE_SCHEDULE = encoded({"ip": "\ud800", "tasktype": "\ud800", "filename": "\ud800"})


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@PARSERS
@given(body=bodies_of(upload_objects))
@example(body=DEEP)
@example(body=SURROGATE_UPLOAD)
def test_an_upload_body_is_refused_with_bad_input_or_parsed_well_formed(body: bytes) -> None:
    try:
        upload = parse_upload(body)
    except BadInputError:
        return
    data = json.loads(body.decode("utf-8"))
    assert isinstance(data, dict)
    assert upload.payload == base64.b64decode(data["content_b64"], validate=True)
    assert isinstance(upload.filename, str)
    assert upload.task_type and upload.task_type == upload.task_type.strip()
    assert isinstance(upload.req_id, str)
    assert type(upload.total_num) is int
    # the journal (SQLite) and every wire (protobuf, JSON replies) carry UTF-8 only
    assert all(utf8(s) for s in (upload.filename, upload.task_type, upload.req_id)), upload


@PARSERS
@given(body=bodies_of(schedule_objects))
@example(body=DEEP)
@example(body=SURROGATE_SCHEDULE)
def test_a_schedule_body_is_refused_with_the_seeds_message_or_parsed_well_formed(
    body: bytes,
) -> None:
    try:
        request = parse_schedule(body)
    except ScheduleError as exc:
        assert exc.status == 400 and exc.msg
        return
    assert request.client_ip and isinstance(request.client_ip, str)
    assert request.task_type == request.task_type.strip()
    assert request.filenames and all(isinstance(n, str) and n for n in request.filenames)
    assert request.total_num == len(request.filenames)
    assert isinstance(request.req_id, str)
    strings = [request.client_ip, request.task_type, request.req_id, *request.filenames]
    assert all(utf8(s) for s in strings), request


# ---- the live seed intake ------------------------------------------------------------------


def on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on the master's loop from hypothesis' worker thread."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(CALL_TIMEOUT_S * 4)


async def upload_code(cluster: InProcessCluster, bodies: list[bytes]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        try:
            if len(bodies) == 1:
                await channel.unary_unary("/ImageUpload/UploadImage")(
                    bodies[0], timeout=CALL_TIMEOUT_S
                )
            else:
                await channel.stream_unary("/ImageUpload/UploadImages")(
                    iter(bodies), timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def good_upload(name: str) -> bytes:
    return encoded({"filename": name, "content_b64": picture_b64, "tasktype": "layout"})


async def test_the_seed_upload_methods_answer_any_body_with_a_client_error(make_cluster) -> None:
    cluster = await make_cluster()
    loop = asyncio.get_running_loop()

    @LIVE
    @given(bodies=st.lists(bodies_of(upload_objects), min_size=1, max_size=3))
    @example(bodies=[DEEP])
    @example(bodies=[SURROGATE_UPLOAD])
    @example(bodies=[good_upload("a.png"), SURROGATE_UPLOAD])
    def answers(bodies: list[bytes]) -> None:
        code = on_loop(loop, upload_code(cluster, bodies))
        assert code in CLIENT_ERRORS | {grpc.StatusCode.OK}, (code, bodies)
        if code is grpc.StatusCode.OK:  # only when every message was a valid upload
            for body in bodies:
                parse_upload(body)

    await asyncio.to_thread(answers)
    assert await upload_code(cluster, [good_upload("after.png")]) is grpc.StatusCode.OK
    assert await upload_code(cluster, [good_upload("b.png"), good_upload("c.png")]) is (
        grpc.StatusCode.OK
    )


# ---- the agent link ------------------------------------------------------------------------

#: stands for "the task (and attempt) the master last assigned to this raw agent"
ASSIGNED = "@assigned"

link_texts = st.text(max_size=16) | st.sampled_from(["", "layout", "x" * 300, "\x00"])
#: mostly the task the master gave this agent: reports on it go furthest into the master
task_ids = st.one_of(
    st.just(ASSIGNED), st.just(ASSIGNED), st.sampled_from(["no-such-task", ""]), link_texts
)
uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, 2**64 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
doubles = st.floats() | st.sampled_from([float("nan"), float("inf"), -1.0, 1e308])
floats32 = st.floats(width=32) | st.just(float("nan"))

timings = st.builds(
    common_pb2.BoardTimings,
    receive_ms=doubles,
    queue_ms=doubles,
    decode_ms=doubles,
    inference_ms=doubles,
    postprocess_ms=doubles,
    paced_ms=doubles,
    total_ms=doubles,
)
detections = st.builds(
    common_pb2.Detection,
    class_id=st.integers(-(2**31), 2**31 - 1),
    class_name=link_texts,
    x1=st.integers(-(2**31), 2**31 - 1),
    y1=st.integers(-(2**31), 2**31 - 1),
    x2=st.integers(-(2**31), 2**31 - 1),
    y2=st.integers(-(2**31), 2**31 - 1),
    confidence=floats32,
)
capabilities = st.builds(
    agent_pb2.Capabilities,
    task_types=st.lists(st.sampled_from(["layout"]) | link_texts, max_size=3),
    model_formats=st.lists(link_texts, max_size=2),
    sub_devices=st.lists(
        st.builds(agent_pb2.SubDevice, name=link_texts, kind=link_texts, slots=uint32),
        max_size=2,
    ),
    slots=uint32,
    artefacts=st.lists(
        st.builds(
            agent_pb2.ModelArtefact,
            task_type=st.sampled_from(["layout"]) | link_texts,
            format=st.sampled_from(["onnx", "rknn", "om"]) | link_texts,
            target=link_texts,
            sha256=link_texts,
            backend=link_texts,
        ),
        max_size=2,
    ),
    backends=st.lists(link_texts, max_size=2),
)


def registers(token: str) -> st.SearchStrategy[agent_pb2.Register]:
    return st.builds(
        agent_pb2.Register,
        protocol=st.builds(
            agent_pb2.ProtocolVersion, major=st.sampled_from([1, 0, 2]), minor=uint32
        ),
        join_token=st.sampled_from([token, token, ""]) | link_texts,
        agent_id=st.sampled_from(["", "", "fuzz-agent"]) | link_texts,
        credential=link_texts,
        hostname=link_texts,
        device_type=st.sampled_from(["cpu", "rk3588", ""]) | link_texts,
        emulated=st.booleans(),
        emulation_profile=link_texts,
        time_scale=doubles,
        capabilities=capabilities,
        running_task_ids=st.lists(task_ids, max_size=2),
        finished_task_ids=st.lists(task_ids, max_size=2),
        agent_version=link_texts,
        static_info=st.dictionaries(link_texts, link_texts, max_size=2),
        session=uint64,
    )


heartbeats = st.builds(
    agent_pb2.Heartbeat,
    seq=uint64,
    metrics=st.builds(
        agent_pb2.DeviceMetrics,
        cpu=doubles,
        memory=doubles,
        xpu=doubles,
        xpu_memory=doubles,
        temperature_c=doubles,
        power_w=doubles,
        bandwidth_mbps=doubles,
        latency_ms=doubles,
        probe=link_texts,
    ),
    free_slots=uint32,
    running_task_ids=st.lists(task_ids, max_size=2),
    agent_time_unix_ms=int64,
    echo_seq=uint64,
    outbox=uint32,
    draining=st.booleans(),
)


def agent_messages(token: str) -> st.SearchStrategy[agent_pb2.AgentMessage]:
    """Every kind of message; reports on tasks first, the ones that go furthest in."""
    message = agent_pb2.AgentMessage
    return st.one_of(
        st.builds(
            agent_pb2.TaskDone,
            task_id=task_ids,
            attempt=uint32,
            label=link_texts,
            detections=st.lists(detections, max_size=2),
            timings=timings,
            backend=link_texts,
            model_sha256=link_texts,
            payload_bytes=uint64,
        ).map(lambda m: message(result=m)),
        st.builds(
            agent_pb2.TaskFailed,
            task_id=task_ids,
            attempt=uint32,
            kind=st.sampled_from(["bad_input", "backend", "cancelled", "rejected"]) | link_texts,
            message=link_texts,
            retryable=st.booleans(),
            timings=timings,
        ).map(lambda m: message(failure=m)),
        st.builds(agent_pb2.TaskStarted, task_id=task_ids, attempt=uint32, receive_ms=doubles).map(
            lambda m: message(started=m)
        ),
        heartbeats.map(lambda m: message(heartbeat=m)),
        registers(token).map(lambda m: message(register=m)),
        st.just(message(drained=agent_pb2.Drained())),
        st.just(message()),  # no kind at all
        st.builds(agent_pb2.Goodbye, reason=link_texts).map(lambda m: message(goodbye=m)),
    )


@dataclass
class RawLink:
    """One agent link spoken by hand; remembers what the master sent."""

    cluster: InProcessCluster
    received: list[agent_pb2.MasterMessage] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.cluster.grpc_target)
        self.queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        self.call = agent_pb2_grpc.AgentLinkStub(self.channel).Connect(self._out())
        self.reader = asyncio.create_task(self._read())

    async def _out(self) -> Any:
        while True:
            yield await self.queue.get()

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.received.append(message)
        except grpc.aio.AioRpcError:
            pass
        finally:
            self.ended.set()

    def assigned(self) -> tuple[str, int] | None:
        for message in reversed(self.received):
            if message.WhichOneof("kind") == "assignment":
                return message.assignment.task_id, message.assignment.attempt
        return None

    def send(self, message: agent_pb2.AgentMessage) -> None:
        kind = message.WhichOneof("kind")
        target = self.assigned()
        if kind in ("started", "result", "failure"):
            inner = getattr(message, kind)
            if inner.task_id == ASSIGNED:
                inner.task_id, inner.attempt = target or ("", 0)
        for ids in _task_id_lists(message):
            named = [target[0] if i == ASSIGNED and target else i for i in ids]
            del ids[:]
            ids.extend(named)
        self.queue.put_nowait(message)

    async def until(self, kind: str, limit_s: float = CALL_TIMEOUT_S, must: bool = True) -> bool:
        """Waits for a message of this kind or the end of the link; True if the kind came.
        Neither within the limit is a hang (unless the message need not come)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while loop.time() < deadline:
            if any(m.WhichOneof("kind") == kind for m in self.received):
                return True
            if self.ended.is_set():
                return False
            await asyncio.sleep(0.01)
        assert not must, f"the master neither sent {kind} nor ended the link"
        return False

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.channel.close()


def _task_id_lists(message: agent_pb2.AgentMessage) -> list[Any]:
    kind = message.WhichOneof("kind")
    if kind == "register":
        return [message.register.running_task_ids, message.register.finished_task_ids]
    if kind == "heartbeat":
        return [message.heartbeat.running_task_ids]
    return []


async def the_api_still_answers(cluster: InProcessCluster, task_ids: list[str]) -> None:
    """Every read route answers 200, for every task there is, with a body that fits the
    gateway's own OpenAPI document (what an agent reported is shown there)."""
    headers = {
        "Authorization": f"Bearer {cluster.master.api_token.current()}",
        "Connection": "close",  # a kept-alive connection waits 40 ms for a delayed ACK
    }
    async with httpx.AsyncClient(base_url=cluster.http, timeout=5, headers=headers) as client:
        schema = schemathesis.openapi.from_dict((await client.get("/openapi.json")).json())
        routes = [("/healthz", "/healthz"), ("/api/v1/devices", "/api/v1/devices")]
        routes += [("/api/v1/tasks", "/api/v1/tasks?limit=1000"), ("/nodes", "/nodes")]
        routes += [("/api/v1/tasks/{task_id}", f"/api/v1/tasks/{t}") for t in task_ids]
        for template, path in routes:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
            schema[template]["GET"].validate_response(response)


@dataclass
class Sequence:
    registration: str  #: "proper", "drawn" (the Register below) or "none"
    register: agent_pb2.Register
    messages: list[agent_pb2.AgentMessage]

    def __repr__(self) -> str:  # what hypothesis shows of a failing example
        def line(message: Any) -> str:
            return text_format.MessageToString(message, as_one_line=True)

        messages = ", ".join(f"{{{line(m)}}}" for m in self.messages)
        return f"Sequence({self.registration}, {{{line(self.register)}}}, [{messages}])"


def sequences(token: str) -> st.SearchStrategy[Sequence]:
    return st.builds(
        Sequence,
        registration=st.sampled_from(["proper", "proper", "proper", "drawn", "none"]),
        register=registers(token),
        messages=st.lists(agent_messages(token), min_size=1, max_size=8),
    )


NAN, INF = float("nan"), float("inf")
#: a result for the task just assigned whose figures are not numbers JSON can carry
NONFINITE_RESULT = agent_pb2.AgentMessage(
    result=agent_pb2.TaskDone(
        task_id=ASSIGNED,
        detections=[common_pb2.Detection(class_id=1, confidence=NAN)],
        timings=common_pb2.BoardTimings(total_ms=INF, decode_ms=NAN, inference_ms=-INF),
    )
)
#: finite figures whose difference (the service time) is not
HUGE_RESULT = agent_pb2.AgentMessage(
    result=agent_pb2.TaskDone(
        task_id=ASSIGNED, timings=common_pb2.BoardTimings(total_ms=1.7e308, queue_ms=-1.7e308)
    )
)


async def play(cluster: InProcessCluster, sequence: Sequence, key: int) -> str:
    """Sends one sequence on a fresh link, with a fresh task queued for it to be given."""
    task_id = (await cluster.submit(f"fuzz-{key}", png_bytes())).task_id
    link = RawLink(cluster)
    try:
        if sequence.registration == "proper":
            link.send(
                agent_pb2.AgentMessage(
                    register=agent_pb2.Register(
                        protocol=agent_pb2.ProtocolVersion(major=1, minor=0),
                        join_token=cluster.master.token,
                        device_type="cpu",
                        capabilities=agent_pb2.Capabilities(task_types=["layout"], slots=2),
                    )
                )
            )
            if await link.until("registered"):
                await link.until("assignment", 1.0, must=False)
        elif sequence.registration == "drawn":
            link.send(agent_pb2.AgentMessage(register=sequence.register))
        for message in sequence.messages:
            link.send(message)
            await asyncio.sleep(0)
        if any(m.WhichOneof("kind") == "registered" for m in link.received):
            # a last heartbeat: its ack says the master read everything before it
            link.send(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=2**63)))
            await link.until("heartbeat_ack")
        else:
            await asyncio.sleep(0.02)
    finally:
        await link.close()
    return task_id


async def a_real_agent_runs_a_task(cluster: InProcessCluster, key: str) -> None:
    agent = await cluster.add_agent(f"agent-{key}")
    try:
        reply = await cluster.submit(f"after-{key}", png_bytes(20, 20))
        results = await cluster.wait([reply.task_id], 20)
        assert results[reply.task_id].state == common_pb2.TASK_STATE_DONE, results
    finally:
        await cluster.stop_agent(agent)


async def test_no_agent_message_stops_the_master(make_cluster) -> None:
    cluster = await make_cluster(dead_grace_s=0.5, retry_backoff_s=0.01)
    loop = asyncio.get_running_loop()
    token = cluster.master.token
    task_ids: list[str] = []

    @LINK
    @given(sequence=sequences(token))
    @example(sequence=Sequence("proper", agent_pb2.Register(), [NONFINITE_RESULT]))
    @example(sequence=Sequence("proper", agent_pb2.Register(), [HUGE_RESULT]))
    def survives(sequence: Sequence) -> None:
        task_ids.append(on_loop(loop, play(cluster, sequence, len(task_ids))))
        on_loop(loop, the_api_still_answers(cluster, task_ids))

    await asyncio.to_thread(survives)
    await a_real_agent_runs_a_task(cluster, "end")
    await the_api_still_answers(cluster, task_ids)


async def raw_connect(cluster: InProcessCluster, frames: list[bytes]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        connect = channel.stream_stream("/edgesched.v1.AgentLink/Connect")  # bytes both ways
        call = connect(iter(frames), timeout=CALL_TIMEOUT_S)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_bytes_that_are_no_agent_message_get_a_clean_grpc_answer(make_cluster) -> None:
    cluster = await make_cluster()
    loop = asyncio.get_running_loop()

    @LIVE
    @given(frames=st.lists(st.binary(max_size=64), max_size=3))
    @example(frames=[b"\xff\xff\xff\xff"])  # a truncated varint: no protobuf parses it
    @example(frames=[b"\x0a\x05\x0a\x03\x08\x01"])  # a register cut short inside
    def answered(frames: list[bytes]) -> None:
        code = on_loop(loop, raw_connect(cluster, frames))
        assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, frames  # a hang

    await asyncio.to_thread(answered)
    await the_api_still_answers(cluster, [])
    await a_real_agent_runs_a_task(cluster, "bytes")
