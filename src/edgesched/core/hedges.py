"""Hedged attempts: which attempts want a second one (a suspect device's, a straggler's), the
budget they share, and what they cost. Placing a hedge is dispatch's (it serves them first).

A hedge is an attempt like any other: numbered, live, fenced, journaled (two live attempts are,
see ``commands.needs_persist``). The first result of a live attempt wins and ``_finish`` cancels
the other, so a hedge never changes what a task delivers, only how soon.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgesched.core.attempts import Attempts
from edgesched.core.state import Device, DeviceState, Task, TaskState
from edgesched.core.strategies import network_ms

#: a hedge queue entry's ``elapsed`` for a suspect device's attempt (a straggler's is > 0)
SUSPECT = 0.0


class Hedges(Attempts):
    """Owns the hedge queue, the budget and the hedge counters. Never places a task (dispatch
    does) nor judges a device (it is told when one became suspect)."""

    def set_unhedged(self, task_types: Iterable[str]) -> None:
        """Task types that must never run twice at once (``[tasktypes.<name>] hedge = false``)."""
        self.unhedged = frozenset(task_types)

    def may_hedge(self, task: Task) -> bool:
        """Whether ``task`` may get a hedge now: hedging on, its type allows it, and exactly
        one attempt of it is out (a hedged task is not hedged again while both are out)."""
        return (
            self.settings.hedging
            and self.settings.hedge_budget > 0
            and len(task.live) == 1
            and task.state in (TaskState.ASSIGNED, TaskState.RUNNING)
            and task.task_type not in self.unhedged
        )

    def hedge_limit(self) -> int:
        """Straggler hedges that may be out at once: ``hedge_budget`` × the schedulable
        devices' slots, at least one when the budget is above 0. A suspect device's attempts
        are hedged without it: they are few (its slots), likely lost, and would run again after
        the grace anyway — a budget would only make the last of them wait."""
        budget = self.settings.hedge_budget
        if not self.settings.hedging or budget <= 0:
            return 0
        slots = sum(d.slots for d in self.devices.values() if d.schedulable)
        return max(1, int(budget * slots))

    def hedges_in_flight(self) -> int:
        """Straggler hedges still live, what the budget bounds (tasks whose hedges all ended
        are dropped from the watch)."""
        count = 0
        for task_id in list(self._hedged):
            task = self.tasks.get(task_id)
            if task is None or not any(a in task.live for a in task.hedge_attempts):
                self._hedged.discard(task_id)
                continue
            count += sum(1 for a in task.budgeted_attempts if a in task.live)
        return count

    def _want_hedge(self, task_id: str, attempt: int, elapsed: float) -> None:
        if task_id not in self._hedge_wanted:
            self._hedge_wanted.add(task_id)
            self._hedge_queue.append((task_id, attempt, elapsed))

    def _hedge_suspect(self, device: Device) -> None:
        """The device became suspect: each of its attempts that may be hedged wants one."""
        if not self.settings.hedging:
            return
        for task_id, attempt in sorted(device.inflight):
            task = self.tasks.get(task_id)
            if task is not None and task.live.get(attempt) == device.id and self.may_hedge(task):
                self._want_hedge(task_id, attempt, SUSPECT)

    def _hedge_stragglers(self, now: float) -> None:
        """Attempts on online devices running past their threshold want a hedge: ``max(floor,
        factor × p95 of (task type, device type) + transfer estimate)``. One pass over the
        online devices' in-flight attempts, and none when the budget is spent."""
        s = self.settings
        if not s.hedging or s.hedge_straggler_factor <= 0:
            return
        if self.hedges_in_flight() >= self.hedge_limit():
            return
        for device in self.devices.values():
            if device.state is not DeviceState.ONLINE or not device.link_up:
                continue
            for task_id, attempt in device.inflight:
                task = self.tasks.get(task_id)
                if (
                    task is None
                    or task.state is not TaskState.RUNNING
                    or attempt != task.attempt  # started_at is the newest attempt's
                    or task_id in self._hedge_wanted
                    or not self.may_hedge(task)
                ):
                    continue
                elapsed = now - task.started_at
                if elapsed <= s.hedge_floor_s:
                    continue
                p95 = self.service_times.p95(task.task_type, device.device_type, device.time_scale)
                transfer = network_ms(device, task.size_bytes, s.assumed_bandwidth_mbps)
                threshold = (s.hedge_straggler_factor * p95 + transfer) / 1000
                if elapsed > max(s.hedge_floor_s, threshold):
                    self._want_hedge(task_id, attempt, elapsed)
