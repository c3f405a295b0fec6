"""A client that times a running cluster (the real-process benchmarks start it with
:func:`edgesched.tools.testing.lifecycle.running_cluster`), and the disk's fsync time.

The client speaks the public gRPC API (TaskService) with the cluster's API token: it watches its
own results on one result watch (WatchResultBatches) opened before anything is submitted, submits
on one SubmitBatches stream (in bulk: every submission ready goes in one message; a round trip's
lone task travels alone at once), and times sequential round trips (submit, then wait for that
task's result). A master without the batched RPCs gets SubmitStream and WatchResults.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from edgesched.client.batches import BatchSubmitter, ResultWatch
from edgesched.client.send import TaskStub, task_stub
from edgesched.errors import TransportError
from edgesched.kinds import TaskState
from edgesched.stats import percentile
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.wire import tasks

MAX_MESSAGE = 64 * 1024 * 1024


def _final(result: tasks.TaskResult) -> bool:
    state = tasks.state_of(result)
    return state is not None and state.final


class Client:
    """One client of the cluster, with its own id (idempotency keys and results are per client)."""

    def __init__(self, c: LocalCluster, task_type: str = "echo") -> None:
        self.target = c.grpc_target
        self.metadata = (("authorization", f"Bearer {c.api_token}"),)
        self.task_type = task_type
        self.client_id = f"bench-{uuid.uuid4().hex[:8]}"
        self._channel: grpc.aio.Channel | None = None
        self._stub: TaskStub | None = None
        self._results: dict[str, tasks.TaskResult] = {}
        self._waiters: dict[str, asyncio.Future[tasks.TaskResult]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._submitter: BatchSubmitter  #: the session's SubmitBatches stream
        self._replies: dict[str, asyncio.Future[tasks.SubmitReply]] = {}  #: by key
        self._arrived = asyncio.Event()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Client]:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            self._channel = channel
            self._stub = task_stub(channel)
            watch = ResultWatch(
                self._stub, tasks.watch_request(self.client_id), metadata=self.metadata
            )
            await asyncio.wait_for(watch.registered(), 10)
            self._watch = asyncio.create_task(self._watch_results(watch))
            self._submitter = BatchSubmitter(self._stub, self._on_reply, metadata=self.metadata)
            sending = asyncio.create_task(self._submitter.run())
            try:
                yield self
            finally:
                watch.cancel()
                sending.cancel()
                self._watch.cancel()
                await asyncio.gather(self._watch, sending, return_exceptions=True)

    @property
    def stub(self) -> TaskStub:
        if self._stub is None:
            raise TransportError("the client has no session")
        return self._stub

    async def _watch_results(self, watch: ResultWatch) -> None:
        async for batch in watch.batches():
            for result in batch:
                if not _final(result):
                    continue
                self._results[result.task_id] = result
                waiter = self._waiters.pop(result.task_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(result)
            self._arrived.set()

    def _on_reply(self, request: tasks.SubmitRequest, reply: tasks.SubmitReply) -> None:
        waiter = self._replies.pop(request.idempotency_key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    async def submit(self, requests: list[tasks.SubmitRequest]) -> list[tasks.SubmitReply]:
        """Puts every request on the session's batch stream at once; their replies in order."""
        loop = asyncio.get_running_loop()
        waiters = []
        for request in requests:
            waiter: asyncio.Future[tasks.SubmitReply] = loop.create_future()
            self._replies[request.idempotency_key] = waiter
            waiters.append(waiter)
            self._submitter.put(request)
        return list(await asyncio.gather(*waiters))

    def request(self, payload: bytes, key: str | None = None) -> tasks.SubmitRequest:
        return tasks.submit_request(
            client_id=self.client_id,
            idempotency_key=key or uuid.uuid4().hex,
            task_type=self.task_type,
            filename="bench.bin",
            payload=payload,
        )

    async def bulk(self, payloads: list[bytes], timeout_s: float) -> dict[str, Any]:
        """Submits every payload on one stream and waits for every result: tasks per second
        from the first submission to the last result."""
        started = time.perf_counter()
        requests = [self.request(p) for p in payloads]
        ids: list[str] = []
        errors: list[str] = []

        replies = await asyncio.wait_for(self.submit(requests), timeout_s)
        for reply in replies:
            if reply.error_code:
                errors.append(f"{reply.error_code}: {reply.error}")
            else:
                ids.append(reply.task_id)
        submitted = time.perf_counter()
        deadline = started + timeout_s
        while any(i not in self._results for i in ids):
            left = deadline - time.perf_counter()
            if left <= 0:
                missing = sum(1 for i in ids if i not in self._results)
                raise TransportError(f"{missing} of {len(ids)} results missing after {timeout_s} s")
            self._arrived.clear()
            if all(i in self._results for i in ids):
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                continue
        ended = time.perf_counter()
        states = [tasks.state_of(self._results[i]) for i in ids]
        return {
            "tasks": len(payloads),
            "accepted": len(ids),
            "done": sum(1 for s in states if s is TaskState.DONE),
            "errors": errors[:5],
            "seconds": round(ended - started, 4),
            "submit_seconds": round(submitted - started, 4),
            "tasks_per_s": round(len(ids) / (ended - started), 1) if ids else 0.0,
            "results": [self._results[i] for i in ids],
        }

    async def round_trips(self, payload: bytes, count: int, timeout_s: float) -> dict[str, Any]:
        """``count`` tasks one after another: submit, wait for its result; milliseconds."""
        loop = asyncio.get_running_loop()
        times: list[float] = []
        deadline = time.perf_counter() + timeout_s
        for _ in range(count):
            request = self.request(payload)
            t0 = time.perf_counter()
            waiter: asyncio.Future[tasks.TaskResult] = loop.create_future()
            (reply,) = await asyncio.wait_for(self.submit([request]), 10)
            if reply.error_code:
                raise TransportError(f"{reply.error_code}: {reply.error}")
            if reply.task_id in self._results:
                waiter.set_result(self._results[reply.task_id])
            else:
                self._waiters[reply.task_id] = waiter
            await asyncio.wait_for(waiter, max(0.1, deadline - time.perf_counter()))
            times.append((time.perf_counter() - t0) * 1000)
        return summary_ms(times)


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def fsync_ms(directory: Path, count: int = 200) -> dict[str, float]:
    """The disk's fsync time where the master journals: write 4 KiB, fsync, ``count`` times."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"fsync-probe-{os.getpid()}"
    times: list[float] = []
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(count):
            os.write(fd, block)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return summary_ms(times)
