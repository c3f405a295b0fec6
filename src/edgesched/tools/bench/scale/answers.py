"""How a simulated agent answers the tasks the master assigns it (the scale benchmark's phase
with tasks, :mod:`edgesched.tools.bench.scale.flow`): like the real agent's ``noop`` backend, at
once, with the real protocol — a ``TaskDone`` for the assignment's attempt once the whole payload
is there (inline with the assignment, protocol ≥ 1.1, or its last ``PayloadChunk``). It speaks
1.2 as the real agent does: a batch of assignments is answered with one batch of results.

No started report: the master does not need one (the real agent's is informative)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from edgesched.wire import link as wire

#: assignments whose payload is still coming, per agent: task id → (attempt, arrived)
Pending = dict[str, tuple[int, float]]


class Answering(Protocol):
    pending: Pending
    tasks_answered: int

    async def send(self, call: Any, message: wire.AgentMessage) -> None: ...


async def answer(agent: Answering, call: Any, message: wire.MasterMessage) -> bool:
    """Handles an assignment or payload chunk; False for any other message (not ours)."""
    kind = wire.kind_of(message)
    if kind in ("assignment", "assignments"):
        now = time.monotonic()
        answers = []
        for a in wire.assignments_of(message):
            if a.payload_inline or a.payload_size == 0:
                answers.append(_result(a.task_id, a.attempt, now, a.payload_size))
            else:
                agent.pending[a.task_id] = (a.attempt, now)
        if answers:
            await agent.send(call, answers[0] if len(answers) == 1 else wire.report_batch(answers))
            agent.tasks_answered += len(answers)
        return True
    if kind == "chunk":
        chunk = message.chunk
        if chunk.last and chunk.task_id in agent.pending:
            attempt, arrived = agent.pending.pop(chunk.task_id)
            size = chunk.offset + len(chunk.data)
            await _done(agent, call, chunk.task_id, attempt, arrived, size)
        return True
    if kind == "cancel":
        agent.pending.pop(message.cancel.task_id, None)
        return True
    return False


async def _done(
    agent: Answering, call: Any, task_id: str, attempt: int, arrived: float, size: int
) -> None:
    await agent.send(call, _result(task_id, attempt, arrived, size))
    agent.tasks_answered += 1


def _result(task_id: str, attempt: int, arrived: float, size: int) -> wire.AgentMessage:
    total_ms = (time.monotonic() - arrived) * 1000
    return wire.task_done(
        task_id=task_id,
        attempt=attempt,
        label="",
        detections=(),
        timings={"total_ms": total_ms},
        backend="noop",
        payload_bytes=size,
    )
