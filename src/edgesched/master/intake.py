"""The client API (TaskService): thin, wire → Master → wire. Errors map in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import TypeVar

import grpc

from edgesched.core.state import TaskState
from edgesched.errors import EdgeschedError, LimitExceededError, NotFoundError
from edgesched.journal.base import TaskRow
from edgesched.master.errmap import grpc_code
from edgesched.master.master import Master
from edgesched.master.peers import peer_host
from edgesched.master.submission import Submission
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2
from edgesched.wire.tasks import submit_reply, task_result_pb

Request = TypeVar("Request")
Reply = TypeVar("Reply")

log = logging.getLogger("edgesched.intake")


#: submissions of one SubmitStream in progress at once: enough for the journal's group commit
#: to take many per transaction, few enough that one client cannot flood the master
STREAM_WINDOW = 256
#: batches of one SubmitBatches stream in progress at once: the next batch is read (and its
#: checks made) while the journal commits the one before
BATCH_WINDOW = 4
#: submissions one SubmitBatch may carry; the items beyond are refused (RESOURCE_EXHAUSTED)
MAX_BATCH = 1024
#: results one TaskResultBatch carries at most (count, and bytes under a client's default
#: 4 MiB receive limit); what is left goes in the next message, at once
RESULT_BATCH = 512
RESULT_BATCH_BYTES = 2 * 1024 * 1024


def _submission(
    request: client_pb2.SubmitRequest, context: grpc.aio.ServicerContext, peer: str = ""
) -> Submission:
    return Submission(
        client_id=request.client_id or peer or peer_host(context.peer()),
        idem_key=request.idempotency_key,
        task_type=request.task_type,
        filename=request.filename,
        payload=request.payload,
        metadata=dict(request.metadata),
        deadline_ms=request.deadline_ms,
        strategy=request.strategy,
    )


async def _in_order(
    requests: AsyncIterator[Request],
    start: Callable[[Request], Coroutine[object, object, Reply]],
    window: int,
) -> AsyncGenerator[Reply, None]:
    """Answers a request stream: up to ``window`` requests in progress at once (so the journal
    commits them together), the answers in request order; the request stream's own error, if
    it ended with one, once every answer went out."""
    started: asyncio.Queue[asyncio.Task[Reply] | None] = asyncio.Queue(maxsize=window)

    async def read() -> None:
        try:
            async for request in requests:
                await started.put(asyncio.create_task(start(request)))
        finally:
            await started.put(None)

    reader = asyncio.create_task(read())
    try:
        while (task := await started.get()) is not None:
            yield await task
        await reader
    finally:
        reader.cancel()


class TaskServicer(client_pb2_grpc.TaskServiceServicer):
    """Speaks the native client API (``client.proto``): decodes submissions and queries, calls
    ``Master``, encodes the replies and result streams. Owns nothing but its streams' windows;
    it may not touch the core, the journal or the payload files."""

    def __init__(self, master: Master) -> None:
        self.master = master

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        await context.abort(grpc_code(exc), str(exc))

    async def Submit(
        self, request: client_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitReply:
        try:
            row, duplicate = await self.master.submit(_submission(request, context))
        except EdgeschedError as exc:
            await self._abort(context, exc)
            raise  # unreachable: abort raises
        return submit_reply(row, duplicate)

    async def SubmitStream(
        self,
        request_iterator: AsyncIterator[client_pb2.SubmitRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[client_pb2.SubmitReply]:
        """Up to STREAM_WINDOW submissions in progress at once (so the journal commits them
        together), replies in request order."""
        start = functools.partial(self._submit_one, context=context)
        # closed with the call (a client gone): its reader stops at once, not when collected
        replies = _in_order(request_iterator, start, STREAM_WINDOW)
        async with contextlib.aclosing(replies):
            async for reply in replies:
                yield reply

    async def _submit_one(
        self, request: client_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitReply:
        try:
            row, duplicate = await self.master.submit(_submission(request, context))
        except EdgeschedError as exc:
            return _refusal(request, exc)
        return submit_reply(row, duplicate)

    async def SubmitBatches(
        self,
        request_iterator: AsyncIterator[client_pb2.SubmitBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[client_pb2.SubmitBatchReply]:
        """One reply message per batch, its replies in request order; up to BATCH_WINDOW
        batches in progress at once, answered in the order they came."""
        # headers at once: a client writes nothing before them (client.batches), so that an
        # older master's UNIMPLEMENTED reaches it before any write
        await context.send_initial_metadata(())
        start = functools.partial(self._submit_batch, context=context)
        # closed with the call (a client gone): its reader stops at once, not when collected
        replies = _in_order(request_iterator, start, BATCH_WINDOW)
        async with contextlib.aclosing(replies):
            async for reply in replies:
                yield reply

    async def _submit_batch(
        self, batch: client_pb2.SubmitBatch, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitBatchReply:
        requests = list(batch.requests)
        taken, beyond = requests[:MAX_BATCH], requests[MAX_BATCH:]
        peer = peer_host(context.peer()) if any(not r.client_id for r in taken) else ""
        outcomes = await self.master.submit_many([_submission(r, context, peer) for r in taken])
        replies = [
            _refusal(request, outcome)
            if isinstance(outcome, Exception)
            else submit_reply(outcome[0], outcome[1])
            for request, outcome in zip(taken, outcomes, strict=True)
        ]
        if beyond:
            too_many = LimitExceededError(
                f"a SubmitBatch carries at most {MAX_BATCH} submissions; this one had "
                f"{len(requests)}: send the rest in the next batch"
            )
            replies.extend(_refusal(request, too_many) for request in beyond)
        return client_pb2.SubmitBatchReply(replies=replies)

    async def WatchResultBatches(
        self, request: client_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[client_pb2.TaskResultBatch]:
        """WatchResults in batches: each wake-up sends whatever has queued for this watcher."""
        hub = self.master.hub
        queue: asyncio.Queue[TaskRow] = asyncio.Queue()
        pending = set(request.task_ids)
        try:
            if not pending:
                hub.watch_client(request.client_id or peer_host(context.peer()), queue)
                await context.send_initial_metadata(())  # as WatchResults: registered now
                while True:
                    for batch in _result_batches(await _drain(queue)):
                        yield batch
            hub.watch_tasks(list(pending), queue)
            ready: list[TaskRow] = []
            for task_id in list(pending):
                if task_id in self.master.rows:
                    continue
                row = await self.master.journal.get(task_id)
                if row is None:
                    await self._abort(context, NotFoundError(f"no task {task_id}"))
                    return
                if task_id in pending and TaskState(row.state).final:
                    pending.discard(task_id)
                    ready.append(row)
            for batch in _result_batches(ready):
                yield batch
            while pending:
                rows = []
                for row in await _drain(queue):
                    if row.id in pending:  # once each, though a task may be announced again
                        pending.discard(row.id)
                        rows.append(row)
                for batch in _result_batches(rows):
                    yield batch
        finally:
            hub.unwatch(queue)

    async def WatchResults(
        self, request: client_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskResult]:
        hub = self.master.hub
        queue: asyncio.Queue[TaskRow] = asyncio.Queue()
        pending = set(request.task_ids)
        try:
            if not pending:
                hub.watch_client(request.client_id or peer_host(context.peer()), queue)
                # headers now tell the client its watch is registered: what it submits from
                # here on is reported on this stream
                await context.send_initial_metadata(())
                while True:
                    yield task_result_pb(await queue.get())
            hub.watch_tasks(list(pending), queue)
            for task_id in list(pending):
                if task_id in self.master.rows:
                    continue
                row = await self.master.journal.get(task_id)
                if row is None:
                    await self._abort(context, NotFoundError(f"no task {task_id}"))
                    return
                if task_id in pending and TaskState(row.state).final:
                    pending.discard(task_id)
                    yield task_result_pb(row)
            while pending:
                row = await queue.get()
                if row.id in pending:
                    pending.discard(row.id)
                    yield task_result_pb(row)
        finally:
            hub.unwatch(queue)

    async def GetTask(
        self, request: client_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.TaskResult:
        try:
            return task_result_pb(await self.master.get_task(request.task_id))
        except EdgeschedError as exc:
            await self._abort(context, exc)
            raise

    async def CancelTask(
        self, request: client_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.TaskResult:
        try:
            reason = request.reason or "cancelled by the client"
            return task_result_pb(await self.master.cancel(request.task_id, reason))
        except EdgeschedError as exc:
            await self._abort(context, exc)
            raise


def _refusal(request: client_pb2.SubmitRequest, exc: Exception) -> client_pb2.SubmitReply:
    """A refused item of a stream or batch: its key, the status name and why."""
    return client_pb2.SubmitReply(
        idempotency_key=request.idempotency_key, error_code=grpc_code(exc).name, error=str(exc)
    )


async def _drain(queue: asyncio.Queue[TaskRow]) -> list[TaskRow]:
    """Waits for one row, then takes every other already queued: a batch is whatever has
    queued when the watcher wakes, never a timer."""
    rows = [await queue.get()]
    while not queue.empty():
        rows.append(queue.get_nowait())
    return rows


def _result_batches(rows: list[TaskRow]) -> list[client_pb2.TaskResultBatch]:
    """``rows`` as result messages of at most RESULT_BATCH results and ~RESULT_BATCH_BYTES."""
    batches: list[client_pb2.TaskResultBatch] = []
    results: list[common_pb2.TaskResult] = []
    size = 0
    for row in rows:
        result = task_result_pb(row)
        grows = result.ByteSize()
        if results and (len(results) >= RESULT_BATCH or size + grows > RESULT_BATCH_BYTES):
            batches.append(client_pb2.TaskResultBatch(results=results))
            results, size = [], 0
        results.append(result)
        size += grows
    if results:
        batches.append(client_pb2.TaskResultBatch(results=results))
    return batches
