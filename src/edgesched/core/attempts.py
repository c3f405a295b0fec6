"""Tasks and their attempts: entering the queue, starting, results, failures and retries with
backoff, cancels, lost attempts, and the per-attempt deadlines that fence off a slow device."""

from __future__ import annotations

import heapq

from edgesched.core.base import CoreState
from edgesched.core.commands import CancelAttempt, Command, Finished, needs_persist, persist
from edgesched.core.retry import COUNTED_KINDS, FATAL_KINDS, backoff_delay
from edgesched.core.state import AttemptError, Device, DeviceState, Task, TaskState
from edgesched.errors import ConflictError, NotFoundError
from edgesched.kinds import FailureKind

#: the deadline heap may hold this many ended attempts beyond twice the unfinished tasks
DEADLINE_SLACK = 1024


class Attempts(CoreState):
    """Owns each task's attempts (which are live, on which device) and its queue entries and
    deadlines. Changes a device only through its in-flight and unstarted sets; never places a
    task (that is dispatch) nor judges a device's health."""

    def submit(self, task: Task, now: float) -> list[Command]:
        """A journaled task enters the queue."""
        task.queued_at = now
        self.tasks[task.id] = task
        self._enqueue(task, now)
        return []

    def restore(self, task: Task, now: float) -> list[Command]:
        """A task read back from the journal after a restart (its attempt as journaled).

        A task that was out on a device stays with it: the device's agent reconnects and reports
        what it still runs; if it does not come back within the grace, the task is queued again.
        """
        self.tasks[task.id] = task
        task.persisted_attempt = task.attempt
        if task.state is TaskState.QUEUED:
            # one attempt may have gone out that the journal never heard of (needs_persist):
            # numbering goes on past it, so a late result of it is refused
            task.attempt += 1
            task.restored_attempt = task.attempt
            self._enqueue(task, now)
            return []
        # a hedged task's row holds each live attempt (``commands.journaled_live``)
        attempts = dict(task.live) or {task.attempt: task.device_id}
        task.live = {}
        for attempt, device_id in sorted(attempts.items()):
            device = self.devices.get(device_id)
            if device is not None and device.state in (DeviceState.DEAD, DeviceState.LEFT):
                task.errors.append(
                    AttemptError(
                        attempt, device.id, FailureKind.DEVICE_LOST, "device gone", now, False
                    )
                )
                continue
            if device is None:
                device = Device(
                    id=device_id,
                    device_type="unknown",
                    slots=0,
                    task_types=frozenset(),
                    state=DeviceState.SUSPECT,
                    link_up=False,
                    last_seen=now,
                    suspect_since=now,
                )
                self.devices[device.id] = device
                self._ordered = self._layout = None
            task.live[attempt] = device.id
            device.inflight.add((task.id, attempt))
        if not task.live:
            # the journal's row is left as it is: read back again, it is re-queued the same way
            self._requeue(task, now)
            return []
        for attempt in task.live:
            self._watch_deadline(task, now, attempt)
        return []

    def _enqueue(self, task: Task, now: float) -> None:
        if task.not_before > now:
            self._seq += 1
            heapq.heappush(self._delayed, (task.not_before, self._seq, task.id))
        else:
            self._ready.append(task.id)

    def _requeue(self, task: Task, now: float, delay: float = 0.0) -> list[Command]:
        task.move(TaskState.QUEUED)
        task.not_before = now + delay
        task.queued_at = now
        self.retries += 1
        self._enqueue(task, now)
        return [persist(task)]

    def _finish(self, task: Task, state: TaskState, now: float, error: str = "") -> list[Command]:
        task.move(state)
        task.finished_at = now
        task.error = error
        out: list[Command] = []
        for attempt, device_id in sorted(task.live.items()):
            out.append(CancelAttempt(task.id, device_id, attempt, f"task {state.value}"))
            self._unwatch(device_id, task.id, attempt)
        if task.attempt_at is not None and state is TaskState.DONE:
            # the attempts the winner ends ran for nothing (until now, as the master sees it)
            wasted = sum(1000 * max(0.0, now - task.attempt_at.get(a, now)) for a in task.live)
            task.wasted_ms += wasted
            self.hedge_wasted_ms += wasted
        task.live.clear()
        self.tasks.pop(task.id, None)
        out += [persist(task), Finished(task)]
        return out

    def _free(self, task_id: str, attempt: int, device_id: str, now: float) -> None:
        device = self.devices.get(device_id)
        if device is not None:
            device.inflight.discard((task_id, attempt))
            self._progress(device, (task_id, attempt), now)

    def _progress(self, device: Device, key: tuple[str, int], now: float) -> None:
        """The device reported on one of its attempts: it is working, not stuck."""
        device.unstarted.discard(key)
        device.progress_at = now
        if device.stalled:
            device.stalled = False
            self._layout = None

    def _unwatch(self, device_id: str, task_id: str, attempt: int) -> None:
        """An attempt ended on the master's side (cancelled, moved, timed out): the stall watch
        waits for no start of it (a cancelled payload may never have left the master)."""
        device = self.devices.get(device_id)
        if device is not None:
            device.unstarted.discard((task_id, attempt))

    def started(self, task_id: str, attempt: int, now: float, device_id: str = "") -> list[Command]:
        device = self.devices.get(device_id) if device_id else None
        if device is not None:
            self._progress(device, (task_id, attempt), now)
        task = self.tasks.get(task_id)
        if task is None or attempt not in task.live or task.state is not TaskState.ASSIGNED:
            return []
        if attempt != task.attempt:
            return []
        task.move(TaskState.RUNNING)
        task.started_at = now
        return [persist(task)] if needs_persist(task) else []

    def done(
        self, task_id: str, attempt: int, device_id: str, service_ms: float, now: float
    ) -> list[Command]:
        """A result arrived. The first one of a live attempt wins (the commands then hold the
        task's ``Finished``: see ``commands.accepted``); the rest are discarded."""
        self._free(task_id, attempt, device_id, now)
        task = self.tasks.get(task_id)
        if task is None or task.live.get(attempt) != device_id:
            return []
        del task.live[attempt]
        device = self.devices.get(device_id)
        if device is not None:
            device.tasks_done += 1
            device.service_ms_total += max(0.0, service_ms)
            self.service_times.observe(task.task_type, device.device_type, service_ms)
        task.device_id = device_id
        if task.hedges:  # a hedged task: did the hedge win? (the losers' time: ``_finish``)
            task.hedge_won = attempt in task.hedge_attempts
            if task.hedge_won:
                self.hedges_won += 1
            else:
                self.hedges_lost += 1
        return self._finish(task, TaskState.DONE, now)

    def failed(
        self,
        task_id: str,
        attempt: int,
        device_id: str,
        kind: str,
        message: str,
        now: float,
    ) -> list[Command]:
        """An attempt failed on its device."""
        self._free(task_id, attempt, device_id, now)
        task = self.tasks.get(task_id)
        if task is None or task.live.get(attempt) != device_id:
            return []
        del task.live[attempt]
        counted = kind in COUNTED_KINDS
        task.errors.append(AttemptError(attempt, device_id, kind, message, now, counted))
        if task.live:
            return [persist(task)]  # another attempt is still out; let it finish
        if kind in FATAL_KINDS:
            return self._finish(task, TaskState.DEAD, now, f"{kind}: {message}")
        if counted:
            task.failures += 1
            if task.failures >= self.settings.max_attempts:
                reason = f"failed {task.failures} times; last: {kind}: {message}"
                return self._finish(task, TaskState.DEAD, now, reason)
            delay = backoff_delay(
                task.failures,
                self.settings.retry_backoff_s,
                self.settings.retry_backoff_cap_s,
                self.rng,
            )
            return self._requeue(task, now, delay)
        return self._requeue(task, now)

    def cancel(self, task_id: str, now: float, reason: str = "cancelled") -> list[Command]:
        task = self.tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} is not pending")
        if task.state.final:
            raise ConflictError(f"task {task_id} is already {task.state.value}")
        # The device keeps the slot until it reports the attempt ended: it may still be running.
        live = dict(task.live)
        out = self._finish(task, TaskState.CANCELLED, now, reason)
        for attempt, device_id in live.items():
            device = self.devices.get(device_id)
            if device is not None and not device.link_up:
                device.inflight.discard((task_id, attempt))
                device.unstarted.discard((task_id, attempt))
        return out

    def reject(self, task: Task, now: float, reason: str) -> list[Command]:
        """A journaled task whose input the master refused (bad header, ...): dead at once."""
        self.tasks[task.id] = task
        task.errors.append(AttemptError(0, "", FailureKind.BAD_INPUT, reason, now, True))
        return self._finish(task, TaskState.DEAD, now, f"bad_input: {reason}")

    def retry(self, task: Task, now: float) -> list[Command]:
        """An operator's retry of a dead task: queued again with its failure count reset."""
        if task.state is not TaskState.DEAD:
            raise ConflictError(f"task {task.id} is {task.state.value}, not dead")
        task.failures = 0
        task.error = ""
        task.live.clear()
        self.tasks[task.id] = task
        return self._requeue(task, now)

    def _lose_attempts(
        self, device: Device, now: float, why: str, kind: str = FailureKind.DEVICE_LOST
    ) -> list[Command]:
        """The device's attempts are gone (dead device, or it came back without them)."""
        out: list[Command] = []
        for task_id, attempt in sorted(device.inflight):
            out += self._lose_attempt(task_id, attempt, device.id, now, why, kind)
        device.inflight.clear()
        device.unstarted.clear()
        return out

    def _lose_attempt(
        self,
        task_id: str,
        attempt: int,
        device_id: str,
        now: float,
        why: str,
        kind: str = FailureKind.DEVICE_LOST,
    ) -> list[Command]:
        task = self.tasks.get(task_id)
        if task is None or task.live.get(attempt) != device_id:
            return []
        del task.live[attempt]
        self._unwatch(device_id, task_id, attempt)
        task.errors.append(AttemptError(attempt, device_id, kind, why, now, False))
        if kind == FailureKind.STALLED:
            task.avoid = device_id
        if task.live:
            return [persist(task)]
        return self._requeue(task, now)

    def _watch_deadline(self, task: Task, now: float, attempt: int = 0) -> None:
        """Watches ``attempt`` (0: the task's newest) for its deadline."""
        limit = task.deadline_s or self.settings.task_deadline_s
        heapq.heappush(self._deadlines, (now + limit, task.id, attempt or task.attempt))
        # an attempt that ends leaves its entry behind until it falls due (600 s by default):
        # at hundreds of tasks a second that is most of the heap, so it is swept of them once
        # it is twice the size of what can still be due
        if len(self._deadlines) > 2 * len(self.tasks) + DEADLINE_SLACK:
            self._deadlines = [
                entry
                for entry in self._deadlines
                if (live := self.tasks.get(entry[1])) is not None and entry[2] in live.live
            ]
            heapq.heapify(self._deadlines)

    def _missed_deadline(self, task_id: str, attempt: int, now: float) -> list[Command]:
        """A slow or hung device: the attempt is cancelled and the task runs elsewhere.

        The device keeps the slot until it reports the attempt ended (a hung one never does).
        """
        task = self.tasks.get(task_id)
        if task is None or attempt not in task.live:
            return []
        device_id = task.live.pop(attempt)
        self._unwatch(device_id, task_id, attempt)  # the deadline judged it already
        task.avoid = device_id  # the next attempt goes elsewhere if another device can run it
        limit = task.deadline_s or self.settings.task_deadline_s
        why = f"attempt {attempt} not finished within {limit:g} s"
        task.errors.append(AttemptError(attempt, device_id, FailureKind.DEADLINE, why, now, False))
        out: list[Command] = [CancelAttempt(task_id, device_id, attempt, "deadline missed")]
        if task.live:
            return [*out, persist(task)]
        return out + self._requeue(task, now)
