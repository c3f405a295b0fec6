"""The device registry: joins and rejoins (reconciling what a device runs), heartbeats, links
lost, leaves, drains, and forgetting devices long gone."""

from __future__ import annotations

from collections.abc import Iterable

from edgesched.core.commands import Command, Forgotten, Reconciled, needs_persist, persist
from edgesched.core.hedges import Hedges
from edgesched.core.state import Device, DeviceState, Metrics, TaskState
from edgesched.errors import NotFoundError


class Devices(Hedges):
    """Owns the registry of devices and their reported state. A device's lost attempts go back
    through ``Attempts``; it never places a task."""

    def register(
        self,
        device: Device,
        running: Iterable[str],
        finished: Iterable[str],
        now: float,
    ) -> list[Command]:
        """A device joined or rejoined. Reconciles what it runs with what the master sent it:
        the commands hold one ``Reconciled`` (see ``commands.reconciliation``)."""
        running_ids, finished_ids = set(running), set(finished)
        old = self.devices.get(device.id)
        out: list[Command] = []
        keep: list[str] = []
        if old is not None:
            device.inflight = set()
            device.tasks_done = old.tasks_done
            device.service_ms_total = old.service_ms_total
            # an operator's drain outlives the link; the agent's own drain (SIGTERM, a leave)
            # ends with the process or link that asked for it: it says so again if it still
            # drains. (Kept, a restarted agent would stay draining forever.)
            device.operator_drained = old.operator_drained
            device.joined_at = old.joined_at or now
            for task_id, attempt in sorted(old.inflight):
                task = self.tasks.get(task_id)
                if task is None or task.live.get(attempt) != device.id:
                    continue  # ended meanwhile (cancelled, done elsewhere): the agent drops it
                if task_id in running_ids or task_id in finished_ids:
                    device.inflight.add((task_id, attempt))
                    keep.append(task_id)
                else:
                    out += self._lose_attempt(
                        task_id, attempt, device.id, now, "device came back without it"
                    )
        else:
            device.joined_at = now
        device.state = DeviceState.ONLINE
        device.link_up = True
        device.last_seen = now
        device.sent_since_heartbeat = 0
        device.prefetch = max(0, self.settings.prefetch)
        self.devices[device.id] = device
        self._ordered = self._layout = None
        for task_id in sorted((running_ids | finished_ids) - {t for t, _ in device.inflight}):
            if self._adopt(device, task_id, now):
                keep.append(task_id)
                task = self.tasks[task_id]
                if needs_persist(task):  # a second live attempt: the journal must hold both
                    out.append(persist(task))
        known = {task_id for task_id, _ in device.inflight}
        drop = sorted(running_ids - known)
        return [Reconciled(device.id, keep=keep, drop=drop), *out]

    def _adopt(self, device: Device, task_id: str, now: float) -> bool:
        """A restarted master meets a device running (or holding the result of) a task it
        restored as queued: the attempt the journal never heard of (``needs_persist``) was
        this one, numbered one past the journaled attempt — the number the restored task
        carries. It stays with the device instead of running again.

        When the restored task went out again before this device came back (another master
        took over, and another agent reconnected first), the device's attempt becomes a
        second live one beside the new: both run on, the first result wins and the other is
        cancelled, as with a hedge — the device may be about to finish, and the new attempt
        has just begun."""
        task = self.tasks.get(task_id)
        if (
            task is not None
            and task.restored_attempt
            and task.state in (TaskState.ASSIGNED, TaskState.RUNNING)
            and task.restored_attempt < task.attempt
            and task.restored_attempt not in task.live
            and device.id not in task.live.values()
        ):
            attempt, task.restored_attempt = task.restored_attempt, 0  # adopted once at most
            task.live[attempt] = device.id
            device.inflight.add((task.id, attempt))
            self._watch_deadline(task, now)
            return True
        if (
            task is None
            or task.state is not TaskState.QUEUED
            or task.live
            or task.attempt != task.persisted_attempt + 1
        ):
            return False
        task.move(TaskState.ASSIGNED)  # its entry in the ready queue is now stale
        task.live = {task.attempt: device.id}
        task.device_id = device.id
        task.assigned_at = now
        device.inflight.add((task.id, task.attempt))
        self._watch_deadline(task, now)
        return True

    def heartbeat(self, device_id: str, metrics: Metrics, now: float) -> list[Command]:
        device = self.devices.get(device_id)
        if device is None:
            return []
        device.metrics = metrics
        device.last_seen = now
        device.heartbeats += 1
        device.sent_since_heartbeat = 0
        if device.state is DeviceState.SUSPECT and device.link_up:
            device.state = DeviceState.ONLINE
            self._layout = None
        return []

    def seen(self, device_id: str, now: float) -> list[Command]:
        """Any frame from the device is a sign of life."""
        device = self.devices.get(device_id)
        if device is not None:
            device.last_seen = now
        return []

    def link_lost(self, device_id: str, now: float) -> list[Command]:
        device = self.devices.get(device_id)
        if device is None or device.state in (DeviceState.DEAD, DeviceState.LEFT):
            return []
        device.link_up = False
        self._layout = None
        if device.state is DeviceState.ONLINE:
            device.state = DeviceState.SUSPECT
            device.suspect_since = now
            self._hedge_suspect(device)  # its attempts run elsewhere too, at once
        return []

    def leave(self, device_id: str, now: float) -> list[Command]:
        device = self.devices.get(device_id)
        if device is None:
            return []
        device.state = DeviceState.LEFT
        device.gone_since = now
        device.link_up = False
        self._layout = None
        return self._lose_attempts(device, now, "device left")

    def drain(self, device_id: str, on: bool) -> list[Command]:
        """An operator's drain (or undrain). An undrain also lifts the agent's own report of
        the operator's earlier drain: the agent is told and stops reporting it. (The caller
        reads the device from ``devices``.)"""
        device = self.devices.get(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id}")
        device.operator_drained = on
        if not on:
            device.self_draining = False
        self._layout = None
        return []

    def self_drain(self, device_id: str, on: bool) -> list[Command]:
        """The agent reports whether it drains (every heartbeat). (A caller that wants to know
        whether it changed compares ``self_draining`` before the call.)"""
        device = self.devices.get(device_id)
        if device is None or device.self_draining == on:
            return []
        device.self_draining = on
        self._layout = None
        return []

    def forget(self, now: float, after_s: float) -> list[Command]:
        """Devices dead or gone for ``after_s`` or longer leave the registry (an agent that
        comes back later joins again with the join token): one ``Forgotten`` each."""
        gone = [
            d.id
            for d in self.devices.values()
            if d.state in (DeviceState.DEAD, DeviceState.LEFT)
            and not d.inflight
            and now - d.gone_since >= after_s
        ]
        for device_id in gone:
            del self.devices[device_id]
        if gone:
            self._ordered = self._layout = None
        return [Forgotten(device_id) for device_id in gone]

    def capable_types(self) -> set[str]:
        """Task types some online, not draining device can run."""
        types: set[str] = set()
        for device in self.devices.values():
            if device.schedulable:
                types |= device.task_types
        return types
