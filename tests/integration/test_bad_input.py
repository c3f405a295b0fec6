"""One case per row of docs/bad-input.md: the table is the specification and the test data."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image

from edgesched.master.payloadformat import parse_ref
from edgesched.master.submission import Submission
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import agent_pb2, agent_pb2_grpc, common_pb2

TABLE = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def table_rows() -> list[dict[str, str]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("case", "---"):
            rows.append(
                dict(zip(["case", "input", "at", "code", "state", "reason"], cells, strict=True))
            )
    return rows


ROWS = table_rows()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims this size (no pixel data worth the name)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (200, 150), bytes(range(256)) * 351 + bytes(144))
    noise.save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


NATIVE: dict[str, tuple[str, bytes]] = {
    "empty": ("a.png", b""),
    "not-image": ("a.png", b"hello, not a picture"),
    "truncated-jpeg": ("a.jpg", truncated_jpeg()),
    "zero-pixels": ("a.png", png_with_size(0, 0)),
    "bomb": ("a.png", png_with_size(100_000, 100_000)),
    "name-dotdot": ("../../etc/passwd.png", png_bytes()),
    "name-absolute": ("/etc/shadow.png", png_bytes()),
    "name-nul": ("a\x00b\x07c\n.png", png_bytes()),
    "name-long": ("x" * 1000 + ".png", png_bytes()),
    "name-unicode": ("图像 ünï.png", png_bytes()),
    "name-formula": ("=1+1.png", png_bytes()),
}


async def outcome_of_native(cluster: InProcessCluster, name: str, payload: bytes, **kw: Any):
    """(code, final state, reason) of one native submission."""
    try:
        reply = (
            await cluster.submit("k", payload, **kw)
            if not name
            else await _submit_named(cluster, name, payload, **kw)
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, "—", exc.details() or ""
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    state = common_pb2.TaskState.Name(result.state).removeprefix("TASK_STATE_").lower()
    row = await cluster.master.journal.get(reply.task_id)
    # a native payload lies in the payload log (a dead task's is copied out, named by its id):
    # the client's file name names no file
    dead = Path(cluster.settings.master.data_dir, "dead", reply.task_id)
    assert parse_ref(row.payload_path) is not None or row.payload_path == str(dead), row
    assert (
        "/" not in result.filename and "\0" not in result.filename and len(result.filename) <= 255
    )
    return "OK", state, result.error


async def _submit_named(cluster: InProcessCluster, name: str, payload: bytes, **kw: Any):
    from edgesched.v1 import client_pb2

    request = client_pb2.SubmitRequest(
        client_id="bad",
        idempotency_key=f"k-{abs(hash(name))}",
        task_type=kw.get("task_type", "layout"),
        filename=name,
        payload=payload,
    )
    return await cluster.stub.Submit(request, timeout=10, metadata=cluster.auth)


class RawAgent:
    """Speaks the agent link by hand, to send what a real agent never would."""

    def __init__(self, cluster: InProcessCluster) -> None:
        self.channel = grpc.aio.insecure_channel(cluster.grpc_target)
        self.queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        self.call = agent_pb2_grpc.AgentLinkStub(self.channel).Connect(self._out())

    async def _out(self) -> Any:
        while True:
            yield await self.queue.get()

    async def register(self, token: str, agent_id: str = "", credential: str = "") -> Any:
        self.queue.put_nowait(
            agent_pb2.AgentMessage(
                register=agent_pb2.Register(
                    protocol=agent_pb2.ProtocolVersion(major=1, minor=0),
                    join_token=token,
                    agent_id=agent_id,
                    credential=credential,
                    device_type="cpu",
                    capabilities=agent_pb2.Capabilities(task_types=["layout"], slots=1),
                )
            )
        )
        return await self.call.read()

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def case_link(cluster: InProcessCluster, case: str, caplog) -> tuple[str, str, str]:
    token = cluster.master.token
    first = RawAgent(cluster)
    reply = await first.register(token)
    agent_id, _credential = reply.registered.agent_id, reply.registered.credential
    try:
        if case == "foreign-result":
            first.queue.put_nowait(
                agent_pb2.AgentMessage(result=agent_pb2.TaskDone(task_id="never-given", attempt=1))
            )
            for _ in range(50):
                if "discarded result of task never-given" in caplog.text:
                    break
                await asyncio.sleep(0.02)
            assert cluster.master.core.devices[agent_id].state.value == "online"
            return "OK", "—", caplog.text
        if case == "duplicate-agent":
            second = RawAgent(cluster)
            try:
                refused = await second.register(token, agent_id=agent_id, credential="guess")
            finally:
                await second.close()
            assert refused.WhichOneof("kind") == "refused"
            assert cluster.master.sessions[agent_id] is not None  # the first one stays
            return "REFUSED", "—", refused.refused.message
        if case == "bad-heartbeat":
            metrics = agent_pb2.DeviceMetrics(
                cpu=float("nan"), memory=-3.0, xpu=250.0, bandwidth_mbps=-1, latency_ms=float("inf")
            )
            first.queue.put_nowait(
                agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=1, metrics=metrics))
            )
            await first.call.read()  # the ack: the heartbeat was handled
            device = (await cluster.get("/api/v1/devices")).json()["devices"][0]
            assert 0 <= device["cpu"] <= 1 and 0 <= device["memory"] <= 1
            assert device["xpu"] is None or 0 <= device["xpu"] <= 1
            assert device["bandwidth_mbps"] >= 0 and device["latency_ms"] >= 0
            state = "device stays online" if device["state"] == "online" else device["state"]
            return "OK", "—", state
    finally:
        await first.close()
    raise AssertionError(case)


def registration(token: str, **fields: Any) -> agent_pb2.AgentMessage:
    caps = fields.pop("capabilities", None) or agent_pb2.Capabilities(
        task_types=["layout"], slots=1
    )
    fields.setdefault("device_type", "cpu")
    return agent_pb2.AgentMessage(
        register=agent_pb2.Register(
            protocol=agent_pb2.ProtocolVersion(major=1, minor=1),
            join_token=token,
            capabilities=caps,
            **fields,
        )
    )


async def join(cluster: InProcessCluster, message: agent_pb2.AgentMessage) -> tuple[RawAgent, Any]:
    agent = RawAgent(cluster)
    agent.queue.put_nowait(message)
    return agent, await agent.call.read()


async def read_kind(agent: RawAgent, kind: str) -> Any:
    for _ in range(100):
        message = await asyncio.wait_for(agent.call.read(), 10)
        if message.WhichOneof("kind") == kind:
            return getattr(message, kind)
    raise AssertionError(f"no {kind} from the master")


AGENT_LIMIT_CASES = {
    "agent-long-hostname",
    "agent-long-name",
    "agent-huge-probe",
    "agent-long-error",
    "agent-huge-result",
    "agent-many-slots",
    "agent-join-flood",
    "agent-too-many",
    "agent-silent",
}


async def case_agent_limits(cluster: InProcessCluster, case: str) -> tuple[str, str, str]:
    """An admitted (or admissible) agent that sends what a real one never would."""
    token = cluster.master.token
    m = cluster.settings.master
    opened: list[RawAgent] = []
    try:
        if case in ("agent-long-hostname", "agent-long-name"):
            fields: dict[str, Any] = (
                {"hostname": "h" * (1 << 20)}
                if case == "agent-long-hostname"
                else {"capabilities": agent_pb2.Capabilities(task_types=["t" * 100], slots=1)}
            )
            agent, reply = await join(cluster, registration(token, **fields))
            opened.append(agent)
            assert reply.WhichOneof("kind") == "refused"
            assert not cluster.master.core.devices and not cluster.master.agent_credentials
            return "REFUSED", "—", reply.refused.message
        if case in ("agent-join-flood", "agent-too-many"):
            if case == "agent-join-flood":
                m.max_joins_per_minute = 3
            else:
                m.max_agents = 3
            for _ in range(3):
                agent, reply = await join(cluster, registration(token))
                opened.append(agent)
                assert reply.WhichOneof("kind") == "registered"
            agent, reply = await join(cluster, registration(token))
            opened.append(agent)
            assert reply.WhichOneof("kind") == "refused"
            assert len(cluster.master.agent_credentials) == 3
            return "REFUSED", "—", reply.refused.message
        if case == "agent-many-slots":
            caps = agent_pb2.Capabilities(task_types=["layout"], slots=100_000)
            info = {"generic.cpu_count": "2"}
            agent, reply = await join(
                cluster, registration(token, capabilities=caps, static_info=info)
            )
            opened.append(agent)
            device = cluster.master.core.devices[reply.registered.agent_id]
            assert device.slots == 2 * m.cpu_slots_per_core
            return "OK", "—", f"slots bounded to {device.slots}"
        slots = 100_000 if case == "agent-silent" else 1
        caps = agent_pb2.Capabilities(task_types=["layout"], slots=slots)
        agent, reply = await join(cluster, registration(token, capabilities=caps))
        opened.append(agent)
        agent_id = reply.registered.agent_id
        if case == "agent-huge-probe":
            metrics = agent_pb2.DeviceMetrics(probe="p" * (30 << 20))
            agent.queue.put_nowait(
                agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=1, metrics=metrics))
            )
            await read_kind(agent, "heartbeat_ack")
            probe = cluster.master.core.devices[agent_id].metrics.probe
            return "OK", "—", f"probe kept as {len(probe)} characters"
        if case == "agent-long-error":
            task_id = (await cluster.submit("long-error", png_bytes())).task_id
            assignment = await read_kind(agent, "assignment")
            failure = agent_pb2.TaskFailed(
                task_id=task_id, attempt=assignment.attempt, kind="backend", message="e" * (1 << 20)
            )
            agent.queue.put_nowait(agent_pb2.AgentMessage(failure=failure))
            for _ in range(200):
                row = await cluster.master.get_task(task_id)
                if row.errors:
                    break
                await asyncio.sleep(0.02)
            return "OK", "—", f"error kept as {len(row.errors[0]['message'])} characters"
        if case == "agent-huge-result":
            task_id = (await cluster.submit("huge-result", png_bytes())).task_id
            assignment = await read_kind(agent, "assignment")
            done = agent_pb2.TaskDone(
                task_id=task_id, attempt=assignment.attempt, label="l" * (2 << 20)
            )
            agent.queue.put_nowait(agent_pb2.AgentMessage(result=done))
            for _ in range(200):
                row = await cluster.master.get_task(task_id)
                if row.errors:
                    break
                await asyncio.sleep(0.02)
            assert row.state != "done" and not row.label
            return "OK", "—", row.errors[0]["message"]
        if case == "agent-silent":
            # the liar claims 100,000 slots, beats, and never reports a start: its tasks go
            # to an honest agent once scheduling.stall_after_s passes
            cluster.settings.scheduling.stall_after_s = 1.0
            agent.queue.put_nowait(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=1)))
            ids = [(await cluster.submit(f"silent-{i}", png_bytes())).task_id for i in range(4)]
            for _ in range(4):
                await read_kind(agent, "assignment")
            await cluster.add_agent("honest")
            beats = asyncio.create_task(_beat(agent))
            try:
                results = await cluster.wait(ids, limit_s=60)
            finally:
                beats.cancel()
            done_on = {r.device_id for r in results.values()}
            states = {common_pb2.TaskState.Name(r.state) for r in results.values()}
            assert agent_id not in done_on and states == {"TASK_STATE_DONE"}, (done_on, states)
            shown = {d["id"]: d for d in (await cluster.get("/api/v1/devices")).json()["devices"]}
            assert shown[agent_id]["state"] == "stalled", shown[agent_id]
            kinds = {e.kind for r in results.values() for e in r.errors}
            assert kinds == {"stalled"}, kinds
            return "OK", "done", "; ".join(e.message for e in results[ids[0]].errors)
    finally:
        for agent in opened:
            await agent.close()
    raise AssertionError(case)


async def _beat(agent: RawAgent) -> None:
    for seq in range(2, 10_000):
        agent.queue.put_nowait(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=seq)))
        await asyncio.sleep(0.2)


async def case_seed(cluster: InProcessCluster, case: str) -> tuple[str, str, str]:
    body = (
        b"{broken"
        if case == "seed-bad-json"
        else json.dumps(
            {"filename": "a.png", "content_b64": "%%%not base64", "tasktype": "layout"}
        ).encode()
    )
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        try:
            await channel.unary_unary("/ImageUpload/UploadImage")(body, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, "—", exc.details() or ""
    return "OK", "—", ""


async def case_request(cluster: InProcessCluster, case: str) -> tuple[str, str, str]:
    """Request fields that would be addresses or paths, bodies too large, a full client."""
    if case in ("schedule-ip-alias", "schedule-ip-name", "schedule-too-large"):
        folder = Path(cluster.settings.master.data_dir) / "upload" / "127.0.0.1"
        folder.mkdir(parents=True)
        (folder / "127.0.0.1_1.png").write_bytes(png_bytes())
        ip = {"schedule-ip-alias": "127.0.0.1/", "schedule-ip-name": ".."}.get(case, "127.0.0.1")
        body = {"ip": ip, "tasktype": "layout", "filename": "127.0.0.1_1.png"}
        if case == "schedule-too-large":
            body["padding"] = "x" * (cluster.settings.master.max_request_bytes + 1)
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{cluster.http}/schedule", json=body, timeout=30)
        assert await cluster.master.journal.counts() == {}
        assert (folder / "127.0.0.1_1.png").read_bytes() == png_bytes()  # nobody else's file
        return str(response.status_code), "—", response.json()["msg"]
    if case == "push-bad-address":
        await cluster.add_agent("a1")
        row, _ = await cluster.master.submit(
            Submission(
                client_id="old",
                idem_key="old-1",
                task_type="layout",
                filename="a.png",
                payload=png_bytes(),
                origin="seed",
                client_addr="127.0.0.1:",  # as a journal written before the check may hold
            )
        )
        for _ in range(600):
            await cluster.master.journal.flush()
            stored = await cluster.master.journal.get(row.id)
            if stored is not None and stored.delivery not in ("", "pending"):
                break
            await asyncio.sleep(0.05)
        assert stored is not None and stored.delivery == "undeliverable"
        return "OK", stored.state, " ".join(e["message"] for e in stored.errors)
    if case == "inflight-limit":
        cluster.settings.master.max_inflight_per_client = 1
        await cluster.submit("first", png_bytes())
        try:
            await cluster.submit("second", png_bytes(color=(1, 2, 3)))
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, "—", exc.details() or ""
        return "OK", "?", ""
    raise AssertionError(case)


async def case_batch_too_long(cluster: InProcessCluster) -> tuple[str, str, str]:
    """1025 submissions in one SubmitBatch: the 1025th is refused, the others each answered."""
    from edgesched.v1 import client_pb2

    batch = client_pb2.SubmitBatch(
        requests=[
            client_pb2.SubmitRequest(
                client_id="batch",
                idempotency_key=f"b{i}",
                task_type="echo",
                filename="b.bin",
                payload=b"x",
            )
            for i in range(1025)
        ]
    )

    async def one() -> Any:
        yield batch

    call = cluster.stub.SubmitBatches(one(), timeout=60, metadata=cluster.auth)
    (answer,) = [a async for a in call]
    replies = list(answer.replies)
    assert len(replies) == 1025 and all(not r.error_code for r in replies[:1024])
    assert replies[1024].idempotency_key == "b1024"
    return replies[1024].error_code, "—", replies[1024].error


async def case_disk_full(tmp_path: Path) -> tuple[str, str, str]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full case needs root (a small tmpfs); CI runs as root")
        pytest.skip("the disk-full case needs root to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    cluster = InProcessCluster(mount, master_settings(mount))
    try:
        await cluster.start()
        with open(mount / "filler", "wb", buffering=0) as filler:  # fills what is left
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        picture = png_bytes(400, 400, (1, 2, 3)) + b"\0" * 200_000
        try:
            await cluster.submit("full", picture)
        except grpc.aio.AioRpcError as exc:
            upload = mount / "master" / "upload"
            leftovers = list(upload.rglob("*")) if upload.exists() else []
            assert [p for p in leftovers if p.is_file()] == [], "nothing half-written"
            segments = (mount / "master" / "payloads").glob("seg-*.log")
            assert sum(p.stat().st_size for p in segments) == 0, "no half entry in the log"
            assert await cluster.master.journal.counts() == {}
            return exc.code().name, "—", exc.details() or ""
        return "OK", "?", ""
    finally:
        try:
            await cluster.close()
        finally:  # a mount left behind breaks pytest's clean-up of its temp folders
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
async def test_every_row_of_the_bad_input_table_holds(row, make_cluster, tmp_path, caplog) -> None:
    case = row["case"]
    caplog.set_level("INFO")
    if case == "disk-full":
        code, state, reason = await case_disk_full(tmp_path)
    else:
        cluster = await make_cluster()
        cluster.settings.master.max_upload_bytes = 512 * 1024
        if case in NATIVE or case in ("too-big", "unknown-type"):
            await cluster.add_agent("a1")
            if case == "too-big":
                code, state, reason = await outcome_of_native(
                    cluster, "", b"\x89PNG" + b"0" * 600_000
                )
            elif case == "unknown-type":
                code, state, reason = await outcome_of_native(
                    cluster, "a.png", png_bytes(), task_type="nosuchmodel"
                )
            else:
                name, payload = NATIVE[case]
                code, state, reason = await outcome_of_native(cluster, name, payload)
                if case == "name-formula":  # shown as given, exported as text, not a formula
                    export = (await cluster.get("/api/v1/tasks/export.csv")).text
                    assert ",'=1+1.png," in export, export
        elif case in AGENT_LIMIT_CASES:
            code, state, reason = await case_agent_limits(cluster, case)
        elif case.startswith("seed-"):
            code, state, reason = await case_seed(cluster, case)
        elif case == "batch-too-long":
            code, state, reason = await case_batch_too_long(cluster)
        elif case.startswith(("schedule-", "push-", "inflight-")):
            code, state, reason = await case_request(cluster, case)
        else:
            code, state, reason = await case_link(cluster, case, caplog)
    assert code == row["code"], (case, reason)
    assert state == row["state"], (case, reason)
    if row["reason"] != "—":
        assert row["reason"] in reason, (case, reason)


def test_the_table_covers_every_case_the_issue_names() -> None:
    cases = {r["case"] for r in ROWS}
    assert {
        "empty",
        "not-image",
        "truncated-jpeg",
        "zero-pixels",
        "bomb",
        "too-big",
        "name-dotdot",
        "name-absolute",
        "name-nul",
        "name-long",
        "name-unicode",
        "seed-bad-json",
        "seed-bad-base64",
        "unknown-type",
        "foreign-result",
        "duplicate-agent",
        "bad-heartbeat",
        "disk-full",
        "schedule-ip-alias",
        "schedule-ip-name",
        "schedule-too-large",
        "push-bad-address",
        "name-formula",
        "inflight-limit",
        *AGENT_LIMIT_CASES,
    } <= cases
