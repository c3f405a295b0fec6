"""One connected agent's outgoing stream: a control queue and a payload queue.

The sender always empties the control queue first, and a payload travels in chunks of at most
1 MiB, so a heartbeat ack never waits behind a big picture on a slow uplink. To an agent of
protocol ≥ 1.2 every assignment queued when the sender gets to it whose payload rides inline goes
in one ``AssignmentBatch`` (bounded by ``BATCH_TASKS`` and ``BATCH_BYTES``): a batch is what has
queued, never a wait, so a lone task still leaves at once (as a plain ``Assignment``).

``AgentSession`` owns the two queues and the close signal of one agent's stream; it does not read
the journal or the scheduling state (the link servicer decides what to send, the master which
payload bytes it holds in memory).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched import failpoints
from edgesched.errors import PayloadError
from edgesched.journal.base import TaskRow
from edgesched.v1 import agent_pb2

CHUNK_BYTES = 1024 * 1024
#: payloads below this ride inline in their assignment (one message, not two); larger ones go in
#: chunks, whose arrival times let the agent measure its link (it measures from 64 KiB on)
INLINE_BYTES = 64 * 1024
#: the most assignments, and inline payload bytes, one AssignmentBatch carries: a batch is no
#: larger than a chunk, so it fits the link's message limit (at least the upload limit + 1 MiB)
#: and a control frame waits for it no longer than for a chunk; what is left goes in the next
BATCH_TASKS = 512
BATCH_BYTES = CHUNK_BYTES


@dataclass
class _Outgoing:
    row: TaskRow
    attempt: int


class AgentSession:
    def __init__(self, device_id: str, peer: str) -> None:
        self.device_id = device_id
        self.peer = peer
        self._control: deque[agent_pb2.MasterMessage] = deque()
        self._payloads: deque[_Outgoing] = deque()
        self._wake = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.on_unreadable: Any = None  #: called with (task id, attempt, message)
        #: the payload of a task from the master's memory, or None (then it is read from disk)
        self.cached: Callable[[str], bytes | None] | None = None
        #: reads a task's payload (a file, a payload-log entry, the database) without blocking
        #: the loop; raises PayloadError
        self.read: Callable[[TaskRow], Awaitable[bytes]] | None = None
        self.inline_payloads = False  #: the agent speaks 1.1: small payloads ride inline
        self.batches = False  #: the agent speaks 1.2: inline assignments go in batches
        #: messages sent on the stream and read from it (the link's figures count them)
        self.messages_sent = 0
        self.messages_received = 0

    def send_control(self, message: agent_pb2.MasterMessage) -> None:
        self._control.append(message)
        self._wake.set()

    def send_assignment(self, row: TaskRow, attempt: int) -> None:
        self._payloads.append(_Outgoing(row, attempt))
        self._wake.set()

    def send_cancel(self, task_id: str, attempt: int, reason: str) -> None:
        self._payloads = deque(
            p for p in self._payloads if not (p.row.id == task_id and p.attempt == attempt)
        )
        cancel = agent_pb2.CancelTask(task_id=task_id, attempt=attempt, reason=reason)
        self.send_control(agent_pb2.MasterMessage(cancel=cancel))

    def close(self, reason: str) -> None:
        self.close_reason = reason
        self.closed.set()
        self._wake.set()

    async def outgoing(self) -> AsyncIterator[agent_pb2.MasterMessage]:
        async for message in self._outgoing():
            self.messages_sent += 1
            yield message

    async def _outgoing(self) -> AsyncIterator[agent_pb2.MasterMessage]:
        while not self.closed.is_set():
            if self._control:
                yield self._control.popleft()
                continue
            if self._payloads:
                if self.batches:
                    frames = self._batch()
                else:
                    job = self._payloads.popleft()
                    data = await self._data(job)
                    frames = self._frames(job, data) if data is not None else _nothing()
                async for message in frames:
                    yield message
                    while self._control:  # control frames overtake the rest of the payload
                        yield self._control.popleft()
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _data(self, job: _Outgoing) -> bytes | None:
        """The job's payload (from memory, else from disk); None when it cannot be read (the
        task fails as bad input: reported through ``on_unreadable``)."""
        row = job.row
        try:
            data = self.cached(row.id) if self.cached is not None else None
            if data is None:  # not kept in memory (restarted master, a large payload)
                data = await (self.read or _read_file)(row)
        except PayloadError as exc:
            if self.on_unreadable is not None:
                self.on_unreadable(row.id, job.attempt, f"payload unreadable: {exc}")
            return None
        return data

    async def _batch(self) -> AsyncIterator[agent_pb2.MasterMessage]:
        """Protocol 1.2: every queued assignment whose payload rides inline, up to the caps,
        in one message (a lone one as a plain Assignment); the first whose payload is too large
        to inline ends the batch and follows it, in chunks."""
        batch: list[tuple[_Outgoing, bytes]] = []
        size = 0
        chunked: tuple[_Outgoing, bytes] | None = None
        while self._payloads and len(batch) < BATCH_TASKS:
            job = self._payloads.popleft()
            data = await self._data(job)  # from memory: no wait; a cancel meanwhile is harmless
            if data is None:
                continue
            if len(data) >= INLINE_BYTES:
                chunked = (job, data)
                break
            if batch and size + len(data) > BATCH_BYTES:
                self._payloads.appendleft(job)  # the next batch's first
                break
            batch.append((job, data))
            size += len(data)
        if len(batch) == 1:
            async for message in self._frames(*batch[0]):
                yield message
        elif batch:
            message = agent_pb2.MasterMessage()
            assignments = message.assignments.assignments
            for job, data in batch:
                assignments.add(**self._assignment(job, data, inline=True))
            yield message
            for _ in batch:
                failpoints.hit("after_assignment_sent")  # its meaning kept: per assignment
        if chunked is not None:
            async for message in self._frames(*chunked):
                yield message

    @staticmethod
    def _assignment(job: _Outgoing, data: bytes, inline: bool) -> dict[str, Any]:
        """An Assignment's fields (built in place: a batch's entry is not built twice)."""
        row = job.row
        return dict(
            task_id=row.id,
            attempt=job.attempt,
            task_type=row.task_type,
            filename=row.filename,
            payload_size=len(data),
            payload_sha256=row.payload_sha256,
            deadline_ms=row.deadline_ms,
            metadata=row.metadata,
            payload=data if inline else b"",
            payload_inline=inline,
        )

    async def _frames(self, job: _Outgoing, data: bytes) -> AsyncIterator[agent_pb2.MasterMessage]:
        """One assignment: inline (protocol ≥ 1.1, a small payload) or followed by its chunks."""
        inline = self.inline_payloads and len(data) < INLINE_BYTES
        yield agent_pb2.MasterMessage(
            assignment=agent_pb2.Assignment(**self._assignment(job, data, inline))
        )
        if inline:
            failpoints.hit("after_assignment_sent")
            return
        offset = 0
        while True:
            piece = data[offset : offset + CHUNK_BYTES]
            last = offset + len(piece) >= len(data)
            yield agent_pb2.MasterMessage(
                chunk=agent_pb2.PayloadChunk(
                    task_id=job.row.id, attempt=job.attempt, offset=offset, data=piece, last=last
                )
            )
            offset += len(piece)
            if last:
                failpoints.hit("after_assignment_sent")
                return


async def _nothing() -> AsyncIterator[agent_pb2.MasterMessage]:
    return
    yield  # an async generator that yields nothing (an unreadable payload sends no frame)


async def _read_file(row: TaskRow) -> bytes:
    """A payload's file (a session not given the master's reader)."""
    try:
        return await asyncio.to_thread(Path(row.payload_path).read_bytes)
    except OSError as exc:
        raise PayloadError(f"payload {row.payload_path}: {exc.strerror}") from exc
