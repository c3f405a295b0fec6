"""The client API (TaskService): thin, wire → Master → wire. Errors map in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from edgesched.core.state import TaskState
from edgesched.errors import EdgeschedError, NotFoundError
from edgesched.journal.base import TaskRow
from edgesched.master.errmap import grpc_code
from edgesched.master.master import Master
from edgesched.master.peers import peer_host
from edgesched.master.submission import Submission
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2
from edgesched.wire.tasks import submit_reply, task_result_pb

log = logging.getLogger("edgesched.intake")


#: submissions of one SubmitStream in progress at once: enough for the journal's group commit
#: to take many per transaction, few enough that one client cannot flood the master
STREAM_WINDOW = 256


def _submission(request: client_pb2.SubmitRequest, context: grpc.aio.ServicerContext) -> Submission:
    return Submission(
        client_id=request.client_id or peer_host(context.peer()),
        idem_key=request.idempotency_key,
        task_type=request.task_type,
        filename=request.filename,
        payload=request.payload,
        metadata=dict(request.metadata),
        deadline_ms=request.deadline_ms,
        strategy=request.strategy,
    )


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
        started: asyncio.Queue[asyncio.Task[client_pb2.SubmitReply] | None] = asyncio.Queue(
            maxsize=STREAM_WINDOW
        )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await started.put(asyncio.create_task(self._submit_one(request, context)))
            finally:
                await started.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await started.get()) is not None:
                yield await task
            await reader  # the request stream's own error, if it ended with one
        finally:
            reader.cancel()

    async def _submit_one(
        self, request: client_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitReply:
        try:
            row, duplicate = await self.master.submit(_submission(request, context))
        except EdgeschedError as exc:
            return client_pb2.SubmitReply(
                idempotency_key=request.idempotency_key,
                error_code=grpc_code(exc).name,
                error=str(exc),
            )
        return submit_reply(row, duplicate)

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
