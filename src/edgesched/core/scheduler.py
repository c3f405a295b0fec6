"""The scheduling core: events in, commands out. Pure: no I/O, no event loop, time is an argument.

The asyncio shell (``edgesched.master``) turns what happens on the wire into calls of this class
and carries out the commands it returns: sending assignments and cancels, writing the journal,
telling clients. Everything the core decides can therefore be tested with plain function calls.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from edgesched.config import SchedulingSettings
from edgesched.core.estimates import ServiceTimes
from edgesched.core.retry import COUNTED_KINDS, FATAL_KINDS, backoff_delay
from edgesched.core.state import (
    AttemptError,
    Device,
    DeviceState,
    Metrics,
    Task,
    TaskState,
)
from edgesched.core.strategies import Strategy, make_strategy
from edgesched.errors import ConflictError, NotFoundError

#: how many "wait for a busier, faster device" decisions one dispatch makes before it stops
MAX_WAIT_DECISIONS = 64


@dataclass(frozen=True)
class Assign:
    """Send the task to the device as this attempt."""

    task: Task
    device_id: str
    attempt: int


@dataclass(frozen=True)
class CancelAttempt:
    """Tell the device to stop this attempt (its result would be discarded anyway)."""

    task_id: str
    device_id: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class Persist:
    """The task's state changed: write it to the journal."""

    task: Task


@dataclass(frozen=True)
class Finished:
    """The task reached a final state: tell whoever waits for it."""

    task: Task


@dataclass(frozen=True)
class Expired:
    """The device was declared dead: close its link if one is still open (a healed partition
    must rejoin and be reconciled, not carry on as if nothing happened)."""

    device_id: str


Command = Assign | CancelAttempt | Persist | Finished | Expired


@dataclass(frozen=True)
class Reconciled:
    keep: list[str]
    drop: list[str]


#: the deadline heap may hold this many ended attempts beyond twice the unfinished tasks
DEADLINE_SLACK = 1024

#: with this many tasks ready or fewer, dispatch does not count the fleet's openings first
FEW_READY = 4


def _by_tier(devices: list[Device], task_type: str) -> list[list[Device]]:
    """The devices able to run ``task_type``, grouped by tier (native formats first), each group
    in the order given."""
    groups: dict[int, list[Device]] = {}
    for d in devices:
        if task_type in d.task_types:
            groups.setdefault(d.tier(task_type), []).append(d)
    return [groups[tier] for tier in sorted(groups)]


def _without(tiers: list[list[Device]], device_id: str) -> list[list[Device]]:
    """The tiers without one device, unless it is the only able one (then it is still used)."""
    kept = [[d for d in tier if d.id != device_id] for tier in tiers]
    kept = [tier for tier in kept if tier]
    return kept or tiers


class Core:
    def __init__(
        self, settings: SchedulingSettings, strategy: Strategy, rng: random.Random
    ) -> None:
        self.settings = settings
        self.strategy = strategy
        self.rng = rng
        self.tasks: dict[
            str, Task
        ] = {}  #: unfinished tasks only; finished ones live in the journal
        self.devices: dict[str, Device] = {}
        self._ordered: list[Device] | None = None  #: the devices by id, until one is replaced
        #: the schedulable devices by id, and per task type the able ones by tier; kept until a
        #: device joins, leaves or changes state (every such change goes through this class)
        self._layout: tuple[list[Device], dict[str, list[list[Device]]]] | None = None
        self._reserved: list[Device] = []  #: devices a task chose to wait for, this dispatch
        self._ready: deque[str] = deque()  #: queued tasks that may be dispatched now (FIFO)
        self._delayed: list[tuple[float, int, str]] = []  #: (not_before, seq, task id)
        self._deadlines: list[tuple[float, str, int]] = []  #: (due, task id, attempt)
        self._next_capability_check = 0.0
        self._seq = 0
        self.retries = 0  #: attempts re-queued, any cause (for metrics)
        self._strategies: dict[str, Strategy] = {}
        self.service_times = ServiceTimes()  #: learnt per (task type, device type)
        self._bind(strategy)

    # ---- tasks -------------------------------------------------------------------------

    def submit(self, task: Task, now: float) -> None:
        """A journaled task enters the queue."""
        task.queued_at = now
        self.tasks[task.id] = task
        self._enqueue(task, now)

    def restore(self, task: Task, now: float) -> None:
        """A task read back from the journal after a restart.

        A task that was out on a device stays with it: the device's agent reconnects and reports
        what it still runs; if it does not come back within the grace, the task is queued again.
        """
        self.tasks[task.id] = task
        if task.state is TaskState.QUEUED:
            self._enqueue(task, now)
            return
        device = self.devices.get(task.device_id)
        if device is not None and device.state in (DeviceState.DEAD, DeviceState.LEFT):
            task.errors.append(
                AttemptError(task.attempt, device.id, "device_lost", "device gone", now, False)
            )
            self._requeue(task, now)
            return
        if device is None:
            device = Device(
                id=task.device_id,
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
        task.live = {task.attempt: device.id}
        device.inflight.add((task.id, task.attempt))
        self._watch_deadline(task, now)

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
        return [Persist(task)]

    def _finish(self, task: Task, state: TaskState, now: float, error: str = "") -> list[Command]:
        task.move(state)
        task.finished_at = now
        task.error = error
        out: list[Command] = []
        for attempt, device_id in sorted(task.live.items()):
            out.append(CancelAttempt(task.id, device_id, attempt, f"task {state.value}"))
            self._unwatch(device_id, task.id, attempt)
        task.live.clear()
        self.tasks.pop(task.id, None)
        out += [Persist(task), Finished(task)]
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
        return [Persist(task)]

    def done(
        self, task_id: str, attempt: int, device_id: str, service_ms: float, now: float
    ) -> tuple[bool, list[Command]]:
        """A result arrived. The first one of a live attempt wins; the rest are discarded."""
        self._free(task_id, attempt, device_id, now)
        task = self.tasks.get(task_id)
        if task is None or task.live.get(attempt) != device_id:
            return False, []
        del task.live[attempt]
        device = self.devices.get(device_id)
        if device is not None:
            device.tasks_done += 1
            device.service_ms_total += max(0.0, service_ms)
            self.service_times.observe(task.task_type, device.device_type, service_ms)
        task.device_id = device_id
        return True, self._finish(task, TaskState.DONE, now)

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
            return [Persist(task)]  # another attempt is still out; let it finish
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
        task.errors.append(AttemptError(0, "", "bad_input", reason, now, True))
        return self._finish(task, TaskState.DEAD, now, f"bad_input: {reason}")

    def _lose_attempts(
        self, device: Device, now: float, why: str, kind: str = "device_lost"
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
        kind: str = "device_lost",
    ) -> list[Command]:
        task = self.tasks.get(task_id)
        if task is None or task.live.get(attempt) != device_id:
            return []
        del task.live[attempt]
        self._unwatch(device_id, task_id, attempt)
        task.errors.append(AttemptError(attempt, device_id, kind, why, now, False))
        if kind == "stalled":
            task.avoid = device_id
        if task.live:
            return [Persist(task)]
        return self._requeue(task, now)

    # ---- devices -----------------------------------------------------------------------

    def register(
        self,
        device: Device,
        running: Iterable[str],
        finished: Iterable[str],
        now: float,
    ) -> tuple[Reconciled, list[Command]]:
        """A device joined or rejoined. Reconciles what it runs with what the master sent it."""
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
        known = {task_id for task_id, _ in device.inflight}
        drop = sorted(running_ids - known)
        return Reconciled(keep=keep, drop=drop), out

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

    def seen(self, device_id: str, now: float) -> None:
        """Any frame from the device is a sign of life."""
        device = self.devices.get(device_id)
        if device is not None:
            device.last_seen = now

    def link_lost(self, device_id: str, now: float) -> None:
        device = self.devices.get(device_id)
        if device is None or device.state in (DeviceState.DEAD, DeviceState.LEFT):
            return
        device.link_up = False
        self._layout = None
        if device.state is DeviceState.ONLINE:
            device.state = DeviceState.SUSPECT
            device.suspect_since = now

    def leave(self, device_id: str, now: float) -> list[Command]:
        device = self.devices.get(device_id)
        if device is None:
            return []
        device.state = DeviceState.LEFT
        device.gone_since = now
        device.link_up = False
        self._layout = None
        return self._lose_attempts(device, now, "device left")

    def drain(self, device_id: str, on: bool) -> Device:
        """An operator's drain (or undrain). An undrain also lifts the agent's own report of
        the operator's earlier drain: the agent is told and stops reporting it."""
        device = self.devices.get(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id}")
        device.operator_drained = on
        if not on:
            device.self_draining = False
        self._layout = None
        return device

    def self_drain(self, device_id: str, on: bool) -> bool:
        """The agent reports whether it drains (every heartbeat). True when that changed."""
        device = self.devices.get(device_id)
        if device is None or device.self_draining == on:
            return False
        device.self_draining = on
        self._layout = None
        return True

    def forget(self, now: float, after_s: float) -> list[str]:
        """Devices dead or gone for ``after_s`` or longer leave the registry (an agent that
        comes back later joins again with the join token). Returns their ids."""
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
        return gone

    # ---- time --------------------------------------------------------------------------

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
        return out + self._lose_attempts(device, now, why, kind="stalled")

    def capable_types(self) -> set[str]:
        """Task types some online, not draining device can run."""
        types: set[str] = set()
        for device in self.devices.values():
            if device.schedulable:
                types |= device.task_types
        return types

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

    def _watch_deadline(self, task: Task, now: float) -> None:
        limit = task.deadline_s or self.settings.task_deadline_s
        heapq.heappush(self._deadlines, (now + limit, task.id, task.attempt))
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
        task.errors.append(AttemptError(attempt, device_id, "deadline", why, now, False))
        out: list[Command] = [CancelAttempt(task_id, device_id, attempt, "deadline missed")]
        if task.live:
            return [*out, Persist(task)]
        return out + self._requeue(task, now)

    def retry(self, task: Task, now: float) -> list[Command]:
        """An operator's retry of a dead task: queued again with its failure count reset."""
        if task.state is not TaskState.DEAD:
            raise ConflictError(f"task {task.id} is {task.state.value}, not dead")
        task.failures = 0
        task.error = ""
        task.live.clear()
        self.tasks[task.id] = task
        return self._requeue(task, now)

    def next_wakeup(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    def dispatch(self, now: float) -> list[Command]:
        """Places ready tasks on devices with openings, in submission order.

        A device takes up to ``slots + prefetch`` assignments: the extra ones wait on the board
        with their payload already there, so a transfer overlaps the task before it. Free slots
        go first for a strategy blind to speed (roundrobin); one that ``weighs_queues`` (load)
        scores prefetch queues against free slots.
        A strategy that ``considers_busy`` (ect) also sees healthy devices without an opening;
        when it picks one of those, the task waits in the queue for it (a fast board about to
        free up beats a slow idle one).

        Cost: what does not change within one call (the schedulable devices in id order, and per
        task type the able ones grouped by tier) is worked out once per call, so a decision is
        one pass over the able devices plus the strategy's own.
        """
        if not self._ready:
            return []
        if self._layout is None:
            if self._ordered is None:
                self._ordered = sorted(self.devices.values(), key=lambda d: d.id)
            self._layout = ([d for d in self._ordered if d.schedulable], {})
        healthy, tiers_by_type = self._layout
        if len(self._ready) > FEW_READY:  # many waiting: stop as soon as every opening is taken
            free = sum(max(0, d.slots + d.prefetch - len(d.inflight)) for d in healthy)
            if not free:
                return []
        else:  # a few (one arrival): each finds out for itself, no pass over the fleet first
            free = len(self._ready)
        out: list[Command] = []
        skipped: list[str] = []
        waits = 0
        for device in self._reserved:
            device.reserved = 0
        self._reserved = []
        while self._ready and free > 0 and waits < MAX_WAIT_DECISIONS:
            task_id = self._ready.popleft()
            task = self.tasks.get(task_id)
            if task is None or task.state is not TaskState.QUEUED:
                continue  # cancelled or already placed; its queue entry is stale
            tiers = tiers_by_type.get(task.task_type)
            if tiers is None:
                tiers = tiers_by_type[task.task_type] = _by_tier(healthy, task.task_type)
            if task.avoid:
                tiers = _without(tiers, task.avoid)
            strategy = self._strategy_for(task)
            # native artefacts first; ONNX on a device without one only when none is open
            for tier in tiers:
                open_ = [d for d in tier if len(d.inflight) < d.slots + d.prefetch]
                if open_:
                    break
            else:
                skipped.append(task_id)
                continue
            if getattr(strategy, "considers_busy", False):
                candidates = tier
            elif getattr(strategy, "weighs_queues", False):
                candidates = open_
            else:  # blind to speed: a free slot first, a prefetch queue only when none is free
                candidates = [d for d in open_ if d.free_slots > 0] or open_
            device = strategy.choose(task, candidates)
            if device.openings <= 0:
                skipped.append(task_id)  # it waits for that device
                device.reserved += 1  # the tasks behind it see a longer wait there
                self._reserved.append(device)
                waits += 1
                continue
            task.attempt += 1
            task.live[task.attempt] = device.id
            task.device_id = device.id
            task.assigned_at = now
            task.move(TaskState.ASSIGNED)
            device.inflight.add((task.id, task.attempt))
            if not device.unstarted:
                device.progress_at = now  # the stall watch starts with its oldest unstarted
            device.unstarted.add((task.id, task.attempt))
            device.sent_since_heartbeat += 1
            self._watch_deadline(task, now)
            free -= 1
            out += [Assign(task, device.id, task.attempt), Persist(task)]
        self._ready.extendleft(reversed(skipped))
        return out

    def _strategy_for(self, task: Task) -> Strategy:
        """The task's own strategy (the seed's ``?stargety=``), else the master's."""
        if not task.strategy or task.strategy == self.strategy.name:
            return self.strategy
        strategy = self._strategies.get(task.strategy)
        if strategy is None:
            strategy = make_strategy(task.strategy, self.settings, self.rng)
            self._bind(strategy)
            self._strategies[task.strategy] = strategy
        return strategy

    def _bind(self, strategy: Strategy) -> None:
        """Strategies that learn (ect) read the core's service-time estimates."""
        bind = getattr(strategy, "bind", None)
        if bind is not None:
            bind(self.service_times)

    def queue_depth(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state is TaskState.QUEUED)
