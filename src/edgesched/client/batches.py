"""Batched submissions and result watches on the client API (protocol 1.2), and the fall-back
to ``SubmitStream``/``WatchResults`` for an older master that answers them UNIMPLEMENTED.

A batch is whatever has queued when the sender's loop gets to it, capped by count and bytes;
nothing ever waits to fill one, so a lone submission travels at once. Shared by ``client send``,
the benchmarks' load and timing clients.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc

from edgesched.errors import TransportError
from edgesched.wire import tasks

#: submissions one message carries at most (the master refuses items beyond its own 1024)
MAX_COUNT = 512
#: bytes one message carries at most (a lone larger submission still travels, alone)
MAX_BYTES = 4 * 1024 * 1024

Metadata = Sequence[tuple[str, str]]
T = TypeVar("T")


def take_batch(
    ready: deque[T],
    size: Callable[[T], int],
    max_count: int = MAX_COUNT,
    max_bytes: int = MAX_BYTES,
) -> list[T]:
    """Takes from the front of ``ready`` what one message carries: at least one item, then
    more while the count and the bytes stay within the caps."""
    batch = [ready.popleft()]
    total = size(batch[0])
    while ready and len(batch) < max_count:
        grows = size(ready[0])
        if total + grows > max_bytes:
            break
        batch.append(ready.popleft())
        total += grows
    return batch


def request_size(request: tasks.SubmitRequest) -> int:
    return int(request.ByteSize())


def unimplemented(exc: BaseException) -> bool:
    """An older master: it lacks the RPC that was called."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.UNIMPLEMENTED


class BatchSubmitter:
    """Sends submissions on one stream as they become ready, many per message
    (``SubmitBatches``), or one per message on ``SubmitStream`` for a master without it. Owns
    the submissions put and not yet answered: when the stream fails they go back to the front,
    in order, so that ``run`` again (a retry) sends them again (their keys make that safe).
    ``on_reply(request, reply)`` runs for each, in order, on the event loop."""

    def __init__(
        self,
        stub: Any,
        on_reply: Callable[[tasks.SubmitRequest, tasks.SubmitReply], None],
        metadata: Metadata = (),
        timeout: float | None = None,
        max_count: int = MAX_COUNT,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.stub = stub
        self.on_reply = on_reply
        self.metadata = tuple(metadata)
        self.timeout = timeout
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.batched = True  #: False once the master answered SubmitBatches UNIMPLEMENTED
        self.messages = 0  #: messages sent (batches, or single submissions)
        self._ready: deque[tasks.SubmitRequest] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._stream = 0  #: the current call's number: an ended call's generator stops

    @property
    def unanswered(self) -> int:
        """Submissions put and not sent yet (after a failed ``run``: not answered)."""
        return len(self._ready)

    def put(self, request: tasks.SubmitRequest) -> None:
        self._ready.append(request)
        self._wake.set()

    def close(self) -> None:
        """Nothing more will be put: ``run`` returns once every submission is answered."""
        self._closed = True
        self._wake.set()

    def drop(self) -> list[tasks.SubmitRequest]:
        """Takes back every submission not answered (a run given up on)."""
        left = list(self._ready)
        self._ready.clear()
        return left

    async def run(self) -> None:
        """One stream until closed and answered. Raises the stream's error (AioRpcError);
        what it left unanswered stays for another ``run``."""
        if self.batched:
            try:
                await self._run(batched=True)
                return
            except grpc.aio.AioRpcError as exc:
                if not unimplemented(exc):
                    raise
                self.batched = False  # an older master: one submission per message
        await self._run(batched=False)

    async def _run(self, batched: bool) -> None:
        sent: deque[list[tasks.SubmitRequest]] = deque()  #: sent, in order, not answered
        self._stream += 1
        stream = self._stream

        async def messages() -> AsyncIterator[Any]:
            if batched:
                # nothing is written before the master's headers: a master without the RPC
                # answers UNIMPLEMENTED at once, and a write racing that answer can fail the
                # call with INTERNAL instead (grpc/grpc#36066)
                await call.initial_metadata()
                if call.done():
                    return
            while True:
                while not self._ready and stream == self._stream:
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                if stream != self._stream:
                    return  # its call ended: what it would take belongs to the next
                if batched:
                    batch = take_batch(self._ready, request_size, self.max_count, self.max_bytes)
                else:
                    batch = [self._ready.popleft()]
                sent.append(batch)
                self.messages += 1
                yield tasks.submit_batch(batch) if batched else batch[0]

        call: Any = None
        try:
            if batched:
                call = self.stub.SubmitBatches(
                    messages(), metadata=self.metadata, timeout=self.timeout
                )
                async for answer in call:
                    batch = sent.popleft()
                    if len(answer.replies) != len(batch):
                        call.cancel()
                        raise TransportError(
                            f"the master answered a batch of {len(batch)} submissions with "
                            f"{len(answer.replies)} replies"
                        )
                    for request, reply in zip(batch, answer.replies):
                        self.on_reply(request, reply)
            else:
                call = self.stub.SubmitStream(
                    messages(), metadata=self.metadata, timeout=self.timeout
                )
                async for reply in call:
                    (request,) = sent.popleft()
                    self.on_reply(request, reply)
        finally:
            if call is not None:
                call.cancel()
            self._stream += 1  # this call's request generator takes nothing more
            self._wake.set()
            # sent and not answered: back to the front, in order, for the next run
            while sent:
                self._ready.extendleft(reversed(sent.pop()))
        if self._ready:  # the master ended the stream early
            raise TransportError(f"the master closed the stream with {len(self._ready)} unanswered")


class ResultWatch:
    """A result watch (``WatchRequest``): ``WatchResultBatches``, or ``WatchResults`` for a
    master without it. ``batches()`` yields the results as they arrive, a message's together."""

    def __init__(
        self,
        stub: Any,
        request: tasks.WatchRequest,
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> None:
        self.stub = stub
        self.request = request
        self.metadata = tuple(metadata)
        self.timeout = timeout
        self.batched = True  #: False once the master answered UNIMPLEMENTED
        self._call: Any = None

    def _open(self) -> Any:
        method = self.stub.WatchResultBatches if self.batched else self.stub.WatchResults
        self._call = method(self.request, metadata=self.metadata, timeout=self.timeout)
        return self._call

    async def registered(self) -> None:
        """Returns once the master has registered a client's watch (its headers came): what
        is submitted from then on is reported on it. Raises what ended the watch instead."""
        call = self._call or self._open()
        await call.initial_metadata()
        if call.done() and await call.code() is grpc.StatusCode.UNIMPLEMENTED and self.batched:
            self.batched = False
            call = self._open()
            await call.initial_metadata()
        if call.done():
            await call.wait_for_connection()  # raises what ended it (an OK end raises nothing)

    async def batches(self) -> AsyncIterator[Sequence[tasks.TaskResult]]:
        """The results, one message's at a time, until the master closes the watch."""
        call = self._call or self._open()
        if self.batched:
            try:
                async for batch in call:
                    yield batch.results
                return
            except grpc.aio.AioRpcError as exc:
                if not unimplemented(exc):
                    raise
            self.batched = False
            call = self._open()
        async for result in call:
            yield (result,)

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
