"""Placing ready tasks on devices with openings, in submission order, by the strategies."""

from __future__ import annotations

from edgesched.core.commands import Assign, Command, needs_persist, persist
from edgesched.core.health import Health
from edgesched.core.hedges import SUSPECT
from edgesched.core.state import Device, DeviceState, Task, TaskState
from edgesched.core.strategies import EarliestCompletion, Strategy, make_strategy

#: how many "wait for a busier, faster device" decisions one dispatch makes before it stops
MAX_WAIT_DECISIONS = 64

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


class Dispatch(Health):
    """Owns the placement decision and the strategies (the master's, and per task its own).
    Only reads device health; it never changes it."""

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
        if not self._ready and not self._hedge_queue:
            return []
        if self._layout is None:
            if self._ordered is None:
                self._ordered = sorted(self.devices.values(), key=lambda d: d.id)
            self._layout = ([d for d in self._ordered if d.schedulable], {})
        healthy, tiers_by_type = self._layout
        hedged = self._dispatch_hedges(healthy, now) if self._hedge_queue else []
        if not self._ready:
            return hedged
        if len(self._ready) > FEW_READY:  # many waiting: stop as soon as every opening is taken
            free = sum(max(0, d.slots + d.prefetch - len(d.inflight)) for d in healthy)
            if not free:
                return hedged
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
            out.append(Assign(task, device.id, task.attempt))
            if needs_persist(task):  # else the journal learns of it with the task's end
                out.append(persist(task))
        self._ready.extendleft(reversed(skipped))
        return hedged + out if hedged else out

    def _dispatch_hedges(self, healthy: list[Device], now: float) -> list[Command]:
        """Places the hedges wanted, ahead of the ready queue, within the budget: each on the
        able device with an opening where it is expected to finish first (the ``ect``
        estimate), never one already holding an attempt of the task. A straggler's hedge goes
        only where it is expected to finish within the time the straggler has already run.
        Entries that cannot be placed yet stay queued; those no longer wanted leave it."""
        out: list[Command] = []
        limit = self.hedge_limit()
        out_now = self.hedges_in_flight()
        kept: list[tuple[str, int, float]] = []
        ect = self._hedge_estimates()
        while self._hedge_queue:
            entry = self._hedge_queue.popleft()
            task_id, attempt, elapsed = entry
            task = self.tasks.get(task_id)
            origin_id = task.live.get(attempt) if task is not None else None
            origin = self.devices.get(origin_id) if origin_id is not None else None
            if (
                task is None
                or origin is None
                or not self.may_hedge(task)
                or (elapsed == SUSPECT and origin.state is not DeviceState.SUSPECT)
            ):
                self._hedge_wanted.discard(task_id)
                continue
            budgeted = elapsed != SUSPECT  # a straggler's hedge (see ``hedge_limit``)
            if budgeted and out_now >= limit:
                kept.append(entry)
                continue
            best: Device | None = None
            best_ms = 0.0
            for tier in _by_tier(healthy, task.task_type):
                for d in tier:
                    if d.id == origin.id or d.id == task.avoid or d.openings <= 0:
                        continue
                    ms = ect.expected_ms(task, d)
                    if best is None or ms < best_ms:
                        best, best_ms = d, ms
                if best is not None:
                    break  # a native artefact first, as for any attempt
            if best is None:
                kept.append(entry)
                continue
            if elapsed != SUSPECT and best_ms / 1000 >= elapsed:
                self._hedge_wanted.discard(task_id)  # not sooner: the straggler watch asks again
                continue
            self._hedge_wanted.discard(task_id)
            out += self._send_hedge(task, attempt, best, now, budgeted)
            out_now += budgeted
        self._hedge_queue.extend(kept)
        return out

    def _send_hedge(
        self, task: Task, original: int, device: Device, now: float, budgeted: bool
    ) -> list[Command]:
        """A second live attempt of ``task`` on ``device``; the first stays live."""
        if task.attempt_at is None:
            task.attempt_at = {original: task.assigned_at}
        task.attempt += 1
        task.attempt_at[task.attempt] = now
        task.live[task.attempt] = device.id
        task.hedges += 1
        task.hedge_attempts += (task.attempt,)
        if budgeted:
            task.budgeted_attempts += (task.attempt,)
        task.device_id = device.id
        task.assigned_at = now
        device.inflight.add((task.id, task.attempt))
        if not device.unstarted:
            device.progress_at = now
        device.unstarted.add((task.id, task.attempt))
        device.sent_since_heartbeat += 1
        self._watch_deadline(task, now)
        self._hedged.add(task.id)
        self.hedges_started += 1
        # two live attempts: journaled, so a restarted master fences both (needs_persist)
        return [Assign(task, device.id, task.attempt), persist(task)]

    def _hedge_estimates(self) -> EarliestCompletion:
        """The ``ect`` estimates (wait, transfer, learnt service time), whatever the strategy."""
        ect = self._hedge_ect
        if ect is None:
            ect = self._hedge_ect = EarliestCompletion(self.settings, self.rng)
            ect.bind(self.service_times)
        return ect

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
