"""The native sender: submits pictures, waits for every result, writes label files.

Every picture is submitted with an idempotency key made from its name and content, so running
the same command again (after a crash, a master restart) never creates a second task: the master
answers with the first submission's task id, and finished results come back at once.

Submissions go on one ``SubmitBatches`` stream: every picture read by the time the stream gets to
it travels in one message (``client.batches``); results come back on result watches of task ids
(``WatchResultBatches``). A master without them gets ``SubmitStream`` and ``WatchResults``.

Several masters ("a:9999,b:9999"; one leader, the others standbys): every call goes to the
leader. A standby's UNAVAILABLE names it (``edgesched.masters``): the sender moves there at once;
a master that does not answer: the next of the list, after the backoff. What was not answered
is submitted again there (the same keys: nothing is accepted twice) and the result watches
resume there.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from edgesched import masters
from edgesched.client.batches import BatchSubmitter, ResultWatch
from edgesched.errors import TransportError
from edgesched.filenames import stem
from edgesched.kinds import TaskState
from edgesched.stages import STAGES
from edgesched.stats import percentile
from edgesched.v1 import client_pb2_grpc
from edgesched.wire import tasks

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RETRYABLE_NAMES = {code.name for code in RETRYABLE}
WATCH_BATCH = 64
#: payload bytes read and not yet answered: reading stops there until replies come back
MAX_HELD_BYTES = 64 * 1024 * 1024
#: the client API's port where an address of the list names none
DEFAULT_PORT = 9999
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 128 * 1024 * 1024),
    ("grpc.max_receive_message_length", 128 * 1024 * 1024),
    # a channel to a master that was down fails calls at once until its next reconnect try:
    # grpc's own cap (120 s) would keep a new leader there unseen for minutes; the sender's
    # backoff cap
    ("grpc.max_reconnect_backoff_ms", 5000),
]


@dataclass
class Outcome:
    path: Path
    task_id: str = ""
    result: tasks.TaskResult | None = None
    refused: str = ""  #: the master refused the submission (bad input, unknown type)


@dataclass
class SendReport:
    outcomes: list[Outcome]
    seconds: float
    duplicates: int = 0
    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def done(self) -> int:
        return sum(
            1 for o in self.outcomes if o.result and tasks.state_of(o.result) is TaskState.DONE
        )

    @property
    def failed(self) -> int:
        return self.sent - self.done

    @property
    def unfinished(self) -> list[Outcome]:
        """Submitted pictures without a final result: the run's timeout passed first."""
        return [o for o in self.outcomes if o.task_id and o.result is None]

    def latencies_ms(self) -> list[float]:
        return [
            o.result.timings.end_to_end_ms
            for o in self.outcomes
            if o.result and tasks.state_of(o.result) is TaskState.DONE
        ]

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms())
        return {
            "sent": self.sent,
            "done": self.done,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "seconds": round(self.seconds, 3),
            "throughput_per_s": round(self.done / self.seconds, 3) if self.seconds else 0.0,
            "latency_ms": {
                "p50": round(percentile(lat, 50), 3) if lat else 0.0,
                "p95": round(percentile(lat, 95), 3) if lat else 0.0,
            },
            "tasks_per_device": dict(sorted(self.by_device.items())),
            "stages_ms": self.stage_summary(),
            "tasks": [self.stages_of(o) for o in self.outcomes if o.result is not None],
        }

    def done_results(self) -> list[tasks.TaskResult]:
        return [
            o.result
            for o in self.outcomes
            if o.result is not None and tasks.state_of(o.result) is TaskState.DONE
        ]

    def stage_summary(self) -> dict[str, dict[str, float]]:
        """Per stage over the done tasks: mean, p50 and p95 in milliseconds."""
        done = self.done_results()
        out: dict[str, dict[str, float]] = {}
        for stage in STAGES:
            values = sorted(float(getattr(r.timings, f"{stage}_ms")) for r in done)
            if values:
                out[stage] = {
                    "mean": round(sum(values) / len(values), 3),
                    "p50": round(percentile(values, 50), 3),
                    "p95": round(percentile(values, 95), 3),
                }
        return out

    @staticmethod
    def stages_of(outcome: Outcome) -> dict[str, object]:
        """One task's stage durations (ms), as the master recorded them."""
        r = outcome.result
        assert r is not None
        return {
            "file": outcome.path.name,
            "task_id": r.task_id,
            "state": tasks.state_name(r),
            "device": r.device_id,
            **{stage: round(float(getattr(r.timings, f"{stage}_ms")), 3) for stage in STAGES},
        }


#: the client API's stub (for annotations: ``task_stub`` makes one)
TaskStub = client_pb2_grpc.TaskServiceStub


def task_stub(channel: grpc.aio.Channel | grpc.Channel) -> TaskStub:
    """The client API's stub on ``channel`` (the client's, the benchmarks' and the harness's)."""
    return client_pb2_grpc.TaskServiceStub(channel)


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str = ""
    key: str = ""


def open_channel(
    target: str, options: list[tuple[str, int]], tls: TlsFiles | None
) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca).read_bytes(),
        private_key=Path(tls.key).read_bytes() if tls.key else None,
        certificate_chain=Path(tls.cert).read_bytes() if tls.cert else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


def idempotency_key(path: Path, data: bytes) -> str:
    return f"{path.name}:{hashlib.sha256(data).hexdigest()[:24]}"


def default_client_id() -> str:
    return socket.gethostname()


class Sender:
    """Submits pictures and follows their results; ``target``: "host:port", a list of them or
    "a:p,b:p" (several masters: it follows their leader)."""

    def __init__(
        self,
        target: str | Sequence[str],
        task_type: str,
        client_id: str = "",
        workers: int = 8,
        timeout_s: float = 600.0,
        on_result: Callable[[Outcome], None] | None = None,
        api_token: str = "",
        tls: TlsFiles | None = None,
    ) -> None:
        self.masters = masters.Rotation(masters.parse_masters(target, DEFAULT_PORT, "client"))
        self._channels: dict[masters.Address, grpc.aio.Channel] = {}
        #: moves from one master to another so far: a call that failed on an older one
        #: does not move on again (the others' failures on the same master are one failure)
        self._generation = 0
        self._hinted = False  #: the last move followed a standby's hint
        self.metadata = (("authorization", f"Bearer {api_token}"),) if api_token else ()
        self.tls = tls
        self.task_type = task_type
        self.client_id = client_id or default_client_id()
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.on_result = on_result
        self.rng = random.Random()
        self._pending: dict[str, Outcome] = {}
        self._batch: list[str] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._retries: list[asyncio.Task[None]] = []
        self.duplicates = 0

    async def run(self, paths: list[Path]) -> SendReport:
        started = time.monotonic()
        self._deadline = started + self.timeout_s
        outcomes = [Outcome(p) for p in paths]
        self._unsettled = len(outcomes)
        self._all_settled = asyncio.Event()
        if not outcomes:
            self._all_settled.set()
        self._sent: deque[Outcome] = deque()  #: put on the submitter, in order, not answered
        self._held = 0
        self._room = asyncio.Event()
        try:
            stub, _ = self._connect()
            submitter = BatchSubmitter(stub, self._on_reply, metadata=self.metadata)
            queue: asyncio.Queue[Outcome] = asyncio.Queue()
            for outcome in outcomes:
                queue.put_nowait(outcome)
            readers = [
                asyncio.create_task(self._reader(queue, submitter)) for _ in range(self.workers)
            ]
            sender = asyncio.create_task(self._send(submitter, outcomes))
            flusher = asyncio.create_task(self._flush_batches())
            try:
                await self._all_settled.wait()
            finally:
                submitter.close()
                for task in (*readers, *self._retries):
                    task.cancel()
                await asyncio.gather(*readers, *self._retries, return_exceptions=True)
                await asyncio.gather(sender, return_exceptions=True)
            self._start_watch()
            flusher.cancel()
            while self._watchers:
                await self._watchers.pop()
        finally:
            for channel in self._channels.values():
                await channel.close()
            self._channels.clear()
        report = SendReport(outcomes, time.monotonic() - started, self.duplicates)
        for o in outcomes:
            if o.result and tasks.state_of(o.result) is TaskState.DONE:
                report.by_device[o.result.device_id] = (
                    report.by_device.get(o.result.device_id, 0) + 1
                )
        return report

    async def _reader(self, queue: asyncio.Queue[Outcome], submitter: BatchSubmitter) -> None:
        """Reads pictures and hands them to the submitter (``workers`` readers at once)."""
        while not queue.empty():
            outcome = queue.get_nowait()
            if outcome.refused:
                continue  # given up on before it was read
            while self._held >= MAX_HELD_BYTES:
                self._room.clear()
                await self._room.wait()
            try:
                data = await asyncio.to_thread(outcome.path.read_bytes)
            except OSError as exc:
                self._refuse(outcome, f"cannot read {outcome.path}: {exc.strerror or exc}")
                continue
            request = tasks.submit_request(
                client_id=self.client_id,
                idempotency_key=idempotency_key(outcome.path, data),
                task_type=self.task_type,
                filename=outcome.path.name,
                payload=data,
            )
            self._put(submitter, outcome, request)

    def _put(
        self, submitter: BatchSubmitter, outcome: Outcome, request: tasks.SubmitRequest
    ) -> None:
        self._sent.append(outcome)  # replies come back in the order submissions are put
        self._held += len(request.payload)
        submitter.put(request)

    def _settle(self) -> None:
        self._unsettled -= 1
        if self._unsettled <= 0:
            self._all_settled.set()

    def _refuse(self, outcome: Outcome, why: str) -> None:
        outcome.refused = why
        if self.on_result is not None:
            self.on_result(outcome)
        self._settle()

    def _on_reply(self, request: tasks.SubmitRequest, reply: tasks.SubmitReply) -> None:
        outcome = self._sent.popleft()
        self._held -= len(request.payload)
        self._room.set()
        if reply.error_code in RETRYABLE_NAMES and time.monotonic() < self._deadline:
            # the master could not take it now (shutting down): the key makes a retry safe
            self._retries.append(asyncio.create_task(self._retry(outcome, request)))
            return
        if reply.error_code:
            self._refuse(outcome, f"{reply.error_code}: {reply.error}")
            return
        outcome.task_id = reply.task_id
        if reply.duplicate:
            self.duplicates += 1
        self._pending[reply.task_id] = outcome
        self._batch.append(reply.task_id)
        self.masters.settled()  # the leader answered: hints count from zero again
        if len(self._batch) >= WATCH_BATCH:
            self._start_watch()
        self._settle()

    async def _retry(self, outcome: Outcome, request: tasks.SubmitRequest) -> None:
        await asyncio.sleep(self.rng.uniform(0.1, 0.2))
        self._put(self._submitter, outcome, request)

    async def _send(self, submitter: BatchSubmitter, outcomes: list[Outcome]) -> None:
        """Runs the submission stream, again (with backoff) while the master is unreachable:
        what it left unanswered is sent again, the keys make that safe. Past --timeout or on
        another error, every picture not answered is refused with the reason."""
        self._submitter = submitter
        delay = 0.2
        while True:
            submitter.timeout = self._call_timeout(3600.0)
            submitter.stub, generation = self._connect()
            try:
                await submitter.run()
                return
            except (grpc.aio.AioRpcError, TransportError) as exc:
                if isinstance(exc, grpc.aio.AioRpcError):
                    code, why = exc.code(), f"{exc.code().name}: {exc.details()}"
                else:
                    code, why = grpc.StatusCode.UNAVAILABLE, str(exc)
                if code not in RETRYABLE or time.monotonic() > self._deadline:
                    break
                hinted = self._move_on(exc, generation)
            if hinted:
                await asyncio.sleep(masters.HINT_PAUSE_S)
                continue
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(5.0, delay * 2)
        submitter.drop()
        self._sent.clear()
        for outcome in outcomes:
            if not outcome.task_id and not outcome.refused:
                self._refuse(outcome, why)

    @property
    def target(self) -> str:
        """The master calls go to now: the hinted leader, else the list's current one."""
        return str(self._address())

    def _address(self) -> masters.Address:
        leader = self.masters.leader
        hinted = leader.grpc() if leader is not None else None
        return hinted or self.masters.current

    def _connect(self) -> tuple[TaskStub, int]:
        """The stub for the master to call now (one channel per master, kept for the run),
        and the number of moves so far (handed back to ``_move_on`` when the call fails)."""
        address = self._address()
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(str(address), CHANNEL_OPTIONS, self.tls)
            self._channels[address] = channel
        self.masters.asked = address
        return task_stub(channel), self._generation

    def _move_on(self, exc: BaseException, generation: int) -> bool:
        """A call on the master of move ``generation`` failed (retryably): to the leader a
        standby named, else to the next master. True: the leader is known, call again after
        a short pause; False: back off first."""
        if generation != self._generation:
            return self._hinted  # another call has moved on already: follow it
        answer = masters.from_rpc_error(exc)
        self._generation += 1
        self._hinted = answer.leader is not None and self.masters.follow(answer.leader)
        if not self._hinted:
            self.masters.next()
        return self._hinted

    def _call_timeout(self, most: float) -> float:
        """A call's deadline: never past the run's own (--timeout), at least a moment."""
        return max(0.1, min(most, self._deadline - time.monotonic()))

    async def _flush_batches(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._start_watch()

    def _start_watch(self) -> None:
        if self._batch:
            ids, self._batch = self._batch, []
            self._watchers.append(asyncio.create_task(self._watch(ids)))

    async def _watch(self, ids: list[str]) -> None:
        """Follows these tasks to their end; reconnects (with backoff) when the master restarts,
        to the leader when another master leads now."""
        remaining = set(ids)
        delay = 0.2
        while remaining and time.monotonic() < self._deadline:
            stub, generation = self._connect()
            try:
                request = tasks.watch_request(self.client_id, sorted(remaining))
                # the stream ends at the run's deadline: a task that stays queued cannot keep
                # the sender past --timeout
                watch = ResultWatch(
                    stub, request, metadata=self.metadata, timeout=self._call_timeout(3600.0)
                )
                async for batch in watch.batches():
                    for result in batch:
                        if result.task_id not in remaining:
                            continue  # a duplicate delivery: results are deduplicated by id
                        remaining.discard(result.task_id)
                        self.masters.settled()
                        outcome = self._pending[result.task_id]
                        outcome.result = result
                        if self.on_result is not None:
                            self.on_result(outcome)
                        delay = 0.2
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() >= self._deadline:
                    return  # out of time: what is left is reported as not finished
                if exc.code() not in RETRYABLE:
                    raise
                if self._move_on(exc, generation):
                    await asyncio.sleep(masters.HINT_PAUSE_S)
                    continue
                await asyncio.sleep(self.rng.uniform(delay / 2, delay))
                delay = min(5.0, delay * 2)


def write_labels(report: SendReport, out_dir: Path) -> int:
    """Writes ``<stem>.txt`` for every finished task; returns how many."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for outcome in report.outcomes:
        result = outcome.result
        if result is not None and tasks.state_of(result) is TaskState.DONE:
            (out_dir / f"{stem(outcome.path.name)}.txt").write_text(result.label, encoding="utf-8")
            count += 1
    return count
