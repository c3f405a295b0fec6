"""What agents report of their attempts: started, done (with the result), failed — one at a
time or many at once (a protocol 1.2 report batch: one dispatch after the whole batch)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from edgesched.clock import Clock
from edgesched.core.commands import accepted
from edgesched.core.core import Core
from edgesched.inference.labels import Detection
from edgesched.journal.base import TaskRow
from edgesched.master.pump import Pump
from edgesched.master.rows import update_row

log = logging.getLogger("edgesched.master")


@dataclass(frozen=True)
class Started:
    """The agent has the whole payload and runs (or queues) the attempt."""

    task_id: str
    attempt: int


@dataclass(frozen=True)
class Done:
    """The attempt's result: the backend's label and detections, the board's timings."""

    task_id: str
    attempt: int
    label: str
    detections: list[Detection]
    board: dict[str, float]


@dataclass(frozen=True)
class Failed:
    """The attempt failed (``kind``: a ``FailureKind`` value as the agent sent it)."""

    task_id: str
    attempt: int
    kind: str
    message: str


Report = Started | Done | Failed


class Results:
    """Feeds the agents' attempt reports to the core and fills a done task's row (label,
    detections, timings) before the core's commands end it. Owns nothing of its own. It may
    not end a task itself (the core decides, ``TaskEnds`` carries it out) nor talk to an
    agent (the link answers it)."""

    def __init__(self, core: Core, rows: dict[str, TaskRow], pump: Pump, clock: Clock) -> None:
        self.core = core
        self.rows = rows
        self.pump = pump
        self.clock = clock

    def reports(self, device_id: str, reports: Iterable[Report]) -> None:
        """Many reports of one agent, in order, then one dispatch for all of them (a batch of
        results frees many slots at once: one pump fills them, not one pump per result)."""
        for report in reports:
            if isinstance(report, Started):
                self.started(device_id, report.task_id, report.attempt)
            elif isinstance(report, Done):
                self._done(device_id, report)
            else:
                self._failed(device_id, report)
        self.pump.pump()

    def started(self, device_id: str, task_id: str, attempt: int) -> None:
        now = self.clock.monotonic()
        self.core.seen(device_id, now)
        self.pump.apply(self.core.started(task_id, attempt, now, device_id))
        task, row = self.core.tasks.get(task_id), self.rows.get(task_id)
        if task is not None and row is not None and row.state != task.state.value:
            update_row(row, task, self.clock)  # shown running; journaled only if it must be

    def done(
        self,
        device_id: str,
        task_id: str,
        attempt: int,
        label: str,
        detections: list[Detection],
        board: dict[str, float],
    ) -> bool:
        kept = self._done(device_id, Done(task_id, attempt, label, detections, board))
        self.pump.pump()
        return kept

    def _done(self, device_id: str, r: Done) -> bool:
        """Feeds a result to the core and fills its row; no dispatch (the caller pumps)."""
        task_id, attempt, board = r.task_id, r.attempt, r.board
        now = self.clock.monotonic()
        task = self.core.tasks.get(task_id)
        service_ms = board.get("total_ms", 0.0) - board.get("queue_ms", 0.0)
        service_ms -= board.get("receive_ms", 0.0)
        commands = self.core.done(task_id, attempt, device_id, service_ms, now)
        if not accepted(commands, task_id) or task is None:
            log.info("discarded result of task %s attempt %d from %s", task_id, attempt, device_id)
            return False
        row = self.rows[task_id]
        turnaround_ms = (now - task.assigned_at) * 1000
        network_ms = max(0.0, turnaround_ms - board.get("total_ms", 0.0))
        row.label = r.label
        row.detections = r.detections
        row.timings = {
            "queue_wait_ms": round((task.assigned_at - task.queued_at) * 1000, 3),
            "transfer_ms": round(board.get("receive_ms", 0.0) + network_ms / 2, 3),
            "inference_ms": round(board.get("inference_ms", 0.0), 3),
            "result_return_ms": round(network_ms / 2, 3),
            "delivery_ms": 0.0,
            "board": board,
        }
        device = self.core.devices.get(device_id)
        if device is not None:
            row.device_type = device.device_type
        self.pump.apply(commands)
        return True

    def failed(self, device_id: str, task_id: str, attempt: int, kind: str, msg: str) -> None:
        self._failed(device_id, Failed(task_id, attempt, kind, msg))
        self.pump.pump()

    def _failed(self, device_id: str, r: Failed) -> None:
        """Feeds a failure to the core; no dispatch (the caller pumps)."""
        task_id, attempt, kind, msg = r.task_id, r.attempt, r.kind, r.message
        commands = self.core.failed(task_id, attempt, device_id, kind, msg, self.clock.monotonic())
        if commands:
            log.warning(
                "task %s attempt %d failed on %s: %s: %s", task_id, attempt, device_id, kind, msg
            )
        else:  # a live attempt always yields a command: this one was superseded or cancelled
            log.info(
                "ignored report for task %s attempt %d from %s (superseded)",
                task_id,
                attempt,
                device_id,
            )
        self.pump.apply(commands)
