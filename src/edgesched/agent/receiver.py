"""Payloads arriving: inline with their assignment or in chunks, reassembled, and the link's
bandwidth measured on the large ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from edgesched.wire import link

#: payloads this large measure the link's bandwidth (smaller ones are mostly round trip); the
#: master sends smaller ones inline with their assignment (edgesched.master.link.INLINE_BYTES)
MIN_MEASURED_BYTES = 64 * 1024


@dataclass
class Inbound:
    """An assignment whose payload is on its way."""

    assignment: link.Assignment
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    first_at: float = 0.0
    arrived_at: float = 0.0


@dataclass(frozen=True)
class Received:
    """An assignment with its whole payload, and how long the payload took to come."""

    assignment: link.Assignment
    payload: bytes
    receive_ms: float
    complete_at: float  #: monotonic time its last byte came


class Receiver:
    """Reassembles payloads.

    Owns the payloads in transit and the measured bandwidth. It may not run, check or answer a
    task: a complete payload goes back to the caller (the runner checks it)."""

    def __init__(self) -> None:
        self.bandwidth_mbps = 0.0
        self._inbound: dict[tuple[str, int], Inbound] = {}

    def assignment(self, a: link.Assignment, now: float) -> Optional[Received]:  # noqa: UP045 - runs on Python 3.9
        """The payload when it came inline; else None, and the chunks will follow."""
        inbound = Inbound(a, arrived_at=now)
        if a.payload_inline:  # the payload came with it: no chunk follows
            payload, a.payload = a.payload, b""
            return self._received(inbound, payload, now)
        self._inbound[(a.task_id, a.attempt)] = inbound
        return None

    def chunk(self, chunk: link.PayloadChunk, now: float) -> Optional[Received]:  # noqa: UP045 - runs on Python 3.9
        """The whole payload once its last chunk is here; None before (or for an unknown one)."""
        inbound = self._inbound.get((chunk.task_id, chunk.attempt))
        if inbound is None:
            return None
        if not inbound.parts:
            inbound.first_at = now
        inbound.parts.append(chunk.data)
        inbound.received += len(chunk.data)
        if not chunk.last:
            return None
        del self._inbound[(chunk.task_id, chunk.attempt)]
        return self._received(inbound, b"".join(inbound.parts), now)

    def _received(self, inbound: Inbound, payload: bytes, now: float) -> Received:
        receive_ms = (now - inbound.arrived_at) * 1000
        if len(payload) >= MIN_MEASURED_BYTES and now > inbound.arrived_at:
            mbps = len(payload) * 8 / (now - inbound.arrived_at) / 1e6
            self.bandwidth_mbps = (
                mbps if not self.bandwidth_mbps else (0.8 * self.bandwidth_mbps + 0.2 * mbps)
            )
        return Received(inbound.assignment, payload, receive_ms, now)
