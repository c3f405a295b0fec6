"""A streaming load client with a bounded window.

The load client submits over ``SubmitBatches`` (every submission its window lets go at once
travels in one message; several streams) and learns about finished tasks from one result watch
(``WatchResultBatches``) for its client id; a master without them gets ``SubmitStream`` and
``WatchResults``. That stream only carries tasks that end after it is registered on the master,
so the client first sends probe tasks until one comes back through it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from edgesched.client.batches import BatchSubmitter, ResultWatch
from edgesched.client.send import task_stub
from edgesched.core.state import TaskState
from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.wire import tasks

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


PayloadFn = Callable[[int], tuple[str, bytes]]  #: index → (file name, bytes)


@dataclass
class LoadStats:
    total: int
    submitted: int = 0
    accepted: int = 0
    refused: int = 0
    done: int = 0
    failed: int = 0  #: ended dead or cancelled
    probes: int = 0  #: tasks sent to prove the result stream was registered
    seconds: float = 0.0
    first_refusal: str = ""
    first_failure: str = ""
    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["finished"] = self.finished
        out["throughput_per_s"] = round(self.finished / self.seconds, 2) if self.seconds else 0.0
        out["seconds"] = round(self.seconds, 3)
        return out


class LoadClient:
    """Submits ``total`` tasks with at most ``window`` unfinished at a time and follows each to
    its end. ``on_finished(count)`` runs (on the event loop) after every finished task."""

    def __init__(
        self,
        target: str,
        api_token: str,
        task_type: str,
        payload: PayloadFn,
        total: int,
        deadline: Deadline,
        window: int = 64,
        streams: int = 4,
        stall_s: float = 60.0,
        on_finished: Callable[[int], None] | None = None,
        client_id: str = "",
        on_result: Callable[[tasks.TaskResult], None] | None = None,
        interval_s: float = 0.0,
        start_at: float = 0.0,
    ) -> None:
        self.target = target
        self.metadata = (("authorization", f"Bearer {api_token}"),) if api_token else ()
        self.task_type = task_type
        self.payload = payload
        self.deadline = deadline
        self.window_size = max(1, window)
        self.streams = max(1, streams)
        self.stall_s = stall_s
        self.on_finished = on_finished
        #: every finished task's result (its timings), as it comes
        self.on_result = on_result
        #: an open stream: task i is submitted i × interval_s after the first (a window as
        #: large as the load keeps it open); 0 = as fast as the window lets go
        self.interval_s = interval_s
        #: the load starts no sooner than this (monotonic): a scenario timed from elsewhere
        self.start_at = start_at
        self._started = 0.0
        self.client_id = client_id or f"bench-{uuid.uuid4().hex[:12]}"
        self.stats = LoadStats(total=total)
        self._next = 0
        self._window = asyncio.Semaphore(self.window_size)
        self._pending: set[str] = set()
        self._early: dict[str, tasks.TaskResult] = {}  #: ended before its reply was read
        self._probes: set[str] = set()
        self._probe_seen = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def started(self) -> float:
        """When the load's first task went (monotonic; 0 before)."""
        return self._started

    async def run(self) -> LoadStats:
        """Runs the load; ``stats.seconds`` counts from the first submission (not the probes)."""
        try:
            await asyncio.wait_for(self._run(), self.deadline.cap(1e9, "running the load"))
        except TimeoutError:
            raise BenchError(
                f"the benchmark's deadline passed with {self.stats.finished} of "
                f"{self.stats.total} tasks finished"
            ) from None
        return self.stats

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target, options=GRPC_OPTIONS) as channel:
            stub = task_stub(channel)
            watch = ResultWatch(stub, tasks.watch_request(self.client_id), metadata=self.metadata)
            reader = asyncio.create_task(self._read(watch))
            try:
                await self._confirm_watch(stub, reader)
                if self.start_at > time.monotonic():
                    await asyncio.sleep(self.start_at - time.monotonic())
                started = self._started = time.monotonic()
                senders = [asyncio.create_task(self._stream(stub)) for _ in range(self.streams)]
                try:
                    await asyncio.gather(*senders)
                    await self._wait_all(stub, reader)
                finally:
                    self.stats.seconds = time.monotonic() - started
                    for sender in senders:
                        sender.cancel()
                    await asyncio.gather(*senders, return_exceptions=True)
            finally:
                watch.cancel()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, watch: ResultWatch) -> None:
        async for batch in watch.batches():
            for result in batch:
                self._on_result(result)

    def _on_result(self, result: tasks.TaskResult) -> None:
        task_id = result.task_id
        if task_id in self._pending:
            self._pending.discard(task_id)
            self._count(result)
        elif task_id in self._probes:
            self._probe_seen.set()
        else:
            self._early[task_id] = result

    def _count(self, result: tasks.TaskResult) -> None:
        if tasks.state_of(result) is TaskState.DONE:
            self.stats.done += 1
            device = result.device_id
            self.stats.by_device[device] = self.stats.by_device.get(device, 0) + 1
        else:
            self.stats.failed += 1
            if not self.stats.first_failure:
                state = tasks.state_name(result)
                self.stats.first_failure = f"{result.task_id} {state}: {result.error}"
        if self.on_result is not None:
            self.on_result(result)
        self._window.release()
        self._progress.set()
        if self.on_finished is not None:
            self.on_finished(self.stats.finished)

    def _request(self, index: int, key: str) -> tasks.SubmitRequest:
        filename, data = self.payload(index)
        return tasks.submit_request(
            client_id=self.client_id,
            idempotency_key=key,
            task_type=self.task_type,
            filename=filename,
            payload=data,
        )

    async def _confirm_watch(self, stub: Any, reader: asyncio.Task[None]) -> None:
        """Probe tasks until one comes back through the result stream: from then on it is
        registered, and no result of the real load can slip past it."""
        for attempt in range(1, 1000):
            key = f"probe-{attempt}"
            reply = await stub.Submit(
                self._request(0, key),
                metadata=self.metadata,
                timeout=self.deadline.cap(60, "submitting a probe task"),
            )
            self._probes.add(reply.task_id)
            self.stats.probes += 1
            waited_until = time.monotonic() + 120.0
            while time.monotonic() < waited_until:
                if reader.done():
                    reader.result()  # raises what ended the stream
                    raise BenchError("the result stream ended before any result")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._probe_seen.wait(), self.deadline.cap(1.0, "waiting for a probe")
                    )
                if self._probe_seen.is_set():
                    return
                task = await stub.GetTask(
                    tasks.get_request(reply.task_id),
                    metadata=self.metadata,
                    timeout=self.deadline.cap(30, "asking for a probe task"),
                )
                state = tasks.state_of(task)
                if state is not None and state.final:
                    if state is not TaskState.DONE:
                        raise BenchError(f"the probe task ended {task.error or state.value}")
                    break  # it ended before the stream was registered: another probe
            else:
                raise BenchError("no probe task finished within 120 s: is a device online?")
        raise BenchError("the result stream never carried a probe task")

    async def _stream(self, stub: Any) -> None:
        submitter = BatchSubmitter(stub, self._on_reply, metadata=self.metadata)

        async def produce() -> None:
            # every place the window frees goes to the submitter at once: what queued by the
            # time its stream gets to it is one message
            while True:
                await self._window.acquire()
                if self._next >= self.stats.total:
                    self._window.release()
                    submitter.close()
                    return
                index = self._next
                self._next += 1
                if self.interval_s > 0:  # the stream's clock, not the previous submission's
                    delay = self._started + index * self.interval_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self.stats.submitted += 1
                submitter.put(self._request(index, f"t-{index}"))

        producer = asyncio.create_task(produce())
        try:
            await submitter.run()
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    def _on_reply(self, request: tasks.SubmitRequest, reply: tasks.SubmitReply) -> None:
        if reply.error_code:
            self.stats.refused += 1
            if not self.stats.first_refusal:
                self.stats.first_refusal = f"{reply.error_code}: {reply.error}"
            self._window.release()
            self._progress.set()
            return
        self.stats.accepted += 1
        early = self._early.pop(reply.task_id, None)
        if early is not None:
            self._count(early)
        else:
            self._pending.add(reply.task_id)

    async def _wait_all(self, stub: Any, reader: asyncio.Task[None]) -> None:
        """Every accepted task finished; stalls are checked against GetTask, then give up."""
        last = time.monotonic()
        seen = self.stats.finished
        while self._pending:
            if reader.done():
                reader.result()
                raise BenchError("the result stream ended early")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._progress.wait(), self.deadline.cap(1.0, "waiting for results")
                )
            if self.stats.finished != seen:
                seen, last = self.stats.finished, time.monotonic()
                continue
            if time.monotonic() - last < self.stall_s:
                continue
            for task_id in sorted(self._pending)[:1000]:  # the stream missed it? ask
                result = await stub.GetTask(
                    tasks.get_request(task_id),
                    metadata=self.metadata,
                    timeout=self.deadline.cap(30, "asking for stalled tasks"),
                )
                state = tasks.state_of(result)
                if state is not None and state.final:
                    self._on_result(result)
            if self.stats.finished == seen:
                raise BenchError(
                    f"no task finished for {self.stall_s:g} s; "
                    f"{len(self._pending)} of {self.stats.accepted} still unfinished"
                )
