"""One connected agent's outgoing stream: a control queue and a payload queue.

The sender always empties the control queue first, and a payload travels in chunks of at most
1 MiB, so a heartbeat ack never waits behind a big picture on a slow uplink.

``AgentSession`` owns the two queues and the close signal of one agent's stream; it does not read
the journal or the scheduling state (the link servicer decides what to send, the master which
payload bytes it holds in memory).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
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
        #: reads a payload_path (a file or a payload-log entry); raises PayloadError
        self.read: Callable[[str], bytes] | None = None
        self.inline_payloads = False  #: the agent speaks 1.1: small payloads ride inline

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
        while not self.closed.is_set():
            if self._control:
                yield self._control.popleft()
                continue
            if self._payloads:
                job = self._payloads.popleft()
                async for message in self._frames(job):
                    yield message
                    while self._control:  # control frames overtake the rest of the payload
                        yield self._control.popleft()
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _frames(self, job: _Outgoing) -> AsyncIterator[agent_pb2.MasterMessage]:
        row = job.row
        try:
            data = self.cached(row.id) if self.cached is not None else None
            if data is None:  # not kept in memory (restarted master, a large payload)
                read = self.read or _read_file
                data = await asyncio.to_thread(read, row.payload_path)
        except PayloadError as exc:
            if self.on_unreadable is not None:
                self.on_unreadable(row.id, job.attempt, f"payload unreadable: {exc}")
            return
        inline = self.inline_payloads and len(data) < INLINE_BYTES
        yield agent_pb2.MasterMessage(
            assignment=agent_pb2.Assignment(
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
                    task_id=row.id, attempt=job.attempt, offset=offset, data=piece, last=last
                )
            )
            offset += len(piece)
            if last:
                failpoints.hit("after_assignment_sent")
                return


def _read_file(payload_path: str) -> bytes:
    """A payload's file (a session not given the master's reader)."""
    try:
        return Path(payload_path).read_bytes()
    except OSError as exc:
        raise PayloadError(f"payload {payload_path}: {exc.strerror}") from exc
