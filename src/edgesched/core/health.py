"""Time moves on: silent devices become suspect then dead, stuck devices stall, delayed retries
become ready, attempts miss their deadline, tasks no device can run expire."""

from __future__ import annotations

import heapq

from edgesched.core.commands import CancelAttempt, Command, Expired
from edgesched.core.devices import Devices
from edgesched.core.state import AttemptError, Device, DeviceState, TaskState
from edgesched.kinds import FailureKind


class Health(Devices):
    """Owns the judgements time makes (suspect, dead, stalled, expired). Changes no task except
    through ``Attempts``."""

    def tick(self, now: float) -> list[Command]:
        """Moves time: devices become suspect or dead, delayed retries become ready."""
        s = self.settings
        out: list[Command] = []
        silent_after = s.suspect_after_beats * s.heartbeat_interval_s
        for device in self.devices.values():
            if device.state is DeviceState.ONLINE and now - device.last_seen > silent_after:
                device.state = DeviceState.SUSPECT
                device.suspect_since = device.last_seen + silent_after  # not the tick's time
                self._layout = None
                self._hedge_suspect(device)
            if device.state is DeviceState.SUSPECT and now - device.suspect_since >= s.dead_grace_s:
                device.state = DeviceState.DEAD
                device.gone_since = now
                self._layout = None
                out.append(Expired(device.id))
                out += self._lose_attempts(device, now, "device dead (no heartbeat)")
            if (
                device.unstarted
                and device.state is DeviceState.ONLINE
                and device.link_up
                and not device.stalled
                and s.stall_after_s > 0
                and now - device.progress_at >= s.stall_after_s
            ):
                out += self._stall(device, now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task_id = heapq.heappop(self._delayed)
            self._ready.append(task_id)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, task_id, attempt = heapq.heappop(self._deadlines)
            out += self._missed_deadline(task_id, attempt, now)
        self._hedge_stragglers(now)
        if now >= self._next_capability_check:
            self._next_capability_check = now + 1.0
            out += self._expire_unplaceable(now)
        return out

    def _stall(self, device: Device, now: float) -> list[Command]:
        """The device holds assignments it never reports starting (while it may still beat):
        it takes nothing new and its attempts run elsewhere, until it reports progress."""
        device.stalled = True
        self._layout = None
        waited = now - device.progress_at
        why = (
            f"device reported no progress on its {len(device.unstarted)} unstarted "
            f"assignments for {waited:.0f} s (scheduling.stall_after_s)"
        )
        out: list[Command] = [
            CancelAttempt(task_id, device.id, attempt, "device stalled")
            for task_id, attempt in sorted(device.inflight)
        ]
        return out + self._lose_attempts(device, now, why, kind=FailureKind.STALLED)

    def _expire_unplaceable(self, now: float) -> list[Command]:
        """A queued task no online device can run waits ``no_device_ttl_s``, then is dead."""
        capable = self.capable_types()
        out: list[Command] = []
        for task in [t for t in self.tasks.values() if t.state is TaskState.QUEUED]:
            if task.task_type in capable:
                task.waiting_since = 0.0
            elif not task.waiting_since:
                task.waiting_since = now
            elif now - task.waiting_since >= self.settings.no_device_ttl_s:
                waited = f"{now - task.waiting_since:.0f} s"
                reason = f"no online device can run task type {task.task_type!r} (waited {waited})"
                task.errors.append(AttemptError(task.attempt, "", "no_device", reason, now, False))
                out += self._finish(task, TaskState.DEAD, now, reason)
        return out

    def next_wakeup(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None
