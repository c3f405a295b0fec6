"""The journal's row of a task and the core's view of it, each made from the other."""

from __future__ import annotations

from typing import Any

from edgesched.clock import Clock
from edgesched.core.commands import journaled_live
from edgesched.core.state import AttemptError, Task, TaskState
from edgesched.journal.base import TaskRow


def task_from_row(row: TaskRow, now: float, clock: Clock) -> Task:
    """The core's view of a journaled task (after a restart, or for a retry)."""
    wall = clock.wall_ms()
    errors = [
        AttemptError(
            attempt=int(e.get("attempt", 0)),
            device_id=str(e.get("device_id", "")),
            kind=str(e.get("kind", "")),
            message=str(e.get("message", "")),
            at=now - max(0, wall - int(e.get("at_unix_ms", wall))) / 1000,
            counted=bool(e.get("counted", False)),
        )
        for e in row.errors
    ]
    return Task(
        id=row.id,
        task_type=row.task_type,
        size_bytes=row.payload_size,
        submitted_at=now,
        client_id=row.client_id,
        state=TaskState(row.state),
        attempt=row.attempt,
        persisted_attempt=row.attempt,
        failures=row.failures,
        device_id=row.device_id,
        strategy=row.strategy,
        deadline_s=row.deadline_ms / 1000,
        queued_at=now,
        assigned_at=now,
        errors=errors,
        live=_live(row),
    )


def _live(row: TaskRow) -> dict[int, str]:
    """A hedged task's live attempts, as ``update_row`` journaled them ({} otherwise: the row's
    attempt and device say it)."""
    live = row.timings.get("live") if not TaskState(row.state).final else None
    if not isinstance(live, dict):
        return {}
    try:
        return {int(attempt): str(device_id) for attempt, device_id in live.items()}
    except (TypeError, ValueError):
        return {}  # a damaged entry: the row's own attempt and device are restored


def update_row(row: TaskRow, task: Task, clock: Clock) -> dict[str, Any]:
    """Copies the core's view of a task into its row; returns the values to journal."""
    row.state = task.state.value
    row.attempt = task.attempt
    row.failures = task.failures
    row.device_id = task.device_id
    row.updated_ms = clock.wall_ms()
    row.errors = [error_json(e.to_dict(), clock) for e in task.errors]
    row.error = task.error
    values: dict[str, Any] = {
        "state": row.state,
        "attempt": row.attempt,
        "failures": row.failures,
        "device_id": row.device_id,
        "device_type": row.device_type,
        "updated_ms": row.updated_ms,
        "errors": row.errors,
        "error": row.error,
    }
    live = journaled_live(task)
    if live is not None:  # a hedged task: each live attempt, for a restart to reconcile
        row.timings["live"] = {str(attempt): device_id for attempt, device_id in live.items()}
        values["timings"] = row.timings
    elif "live" in row.timings:
        del row.timings["live"]
        values["timings"] = row.timings
    if task.state.final:
        if task.state is not TaskState.DONE and row.delivery == "pending":
            row.delivery = ""  # no label file to push for a dead or cancelled task
        row.finished_ms = row.updated_ms
        row.timings.setdefault("end_to_end_ms", float(row.finished_ms - row.submitted_ms))
        if task.hedges:  # what hedging did for (and cost) this task
            row.timings.update(
                attempts=task.attempt,
                hedges=task.hedges,
                hedge_won=task.hedge_won,
                wasted_ms=round(task.wasted_ms, 3),
            )
        values.update(
            finished_ms=row.finished_ms,
            timings=row.timings,
            label=row.label,
            detections=row.detections,
            delivery=row.delivery,
        )
    return values


def error_json(error: dict[str, Any], clock: Clock) -> dict[str, Any]:
    # the core's times are monotonic; the journal keeps wall-clock milliseconds
    at = error.pop("at")
    error["at_unix_ms"] = clock.wall_ms() - int((clock.monotonic() - at) * 1000)
    return error
