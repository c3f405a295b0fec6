"""Property tests: random sequences of events keep the core's invariants, and every task ends."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from edgesched.config import SchedulingSettings
from edgesched.core.commands import (
    Assign,
    CancelAttempt,
    Command,
    Finished,
    accepted,
    reconciliation,
)
from edgesched.core.core import Core
from edgesched.core.state import (
    LEGAL_TRANSITIONS,
    Device,
    DeviceState,
    Metrics,
    Task,
    TaskState,
)
from edgesched.core.strategies import make_strategy

#: device id → (slots, task types); a device always comes back with the same shape
DEVICES: dict[str, tuple[int, frozenset[str]]] = {
    "d0": (1, frozenset({"layout"})),
    "d1": (2, frozenset({"layout", "ocr"})),
    "d2": (3, frozenset({"ocr"})),
}
TASK_TYPES = ("layout", "ocr")
FAIL_KINDS = ("backend", "bad_input", "rejected", "deadline", "cancelled", "device_lost")


@dataclass
class RecordingTask(Task):
    """A task that remembers every transition the core asked of it."""

    moves: list[tuple[TaskState, TaskState]] = field(default_factory=list)

    def move(self, to: TaskState) -> None:
        self.moves.append((self.state, to))
        super().move(to)


class Harness:
    """Drives a Core and checks, after every step, what must always hold."""

    def __init__(self, strategy: str, seed: int, pump: bool = False) -> None:
        #: dispatch after every event, as the master's shell does
        self.pump = pump
        # hedging as the seed has it: on or off, a budget from one hedge to all slots, straggler
        # hedging off or on, and "ocr" opted out half of the time
        knobs = random.Random(seed)
        self.settings = SchedulingSettings(
            max_attempts=3,
            hedging=knobs.random() < 0.75,
            hedge_budget=knobs.choice([0.01, 0.5, 1.0]),
            hedge_straggler_factor=knobs.choice([0.0, 3.0]),
            hedge_floor_s=knobs.choice([0.0, 1.0]),
        )
        self.unhedged = frozenset({"ocr"}) if knobs.random() < 0.5 else frozenset()
        self.core = Core(
            self.settings,
            make_strategy(strategy, self.settings, random.Random(seed)),
            random.Random(seed),
        )
        self.core.set_unhedged(self.unhedged)
        self.now = 0.0
        self.all_tasks: dict[str, RecordingTask] = {}
        self.highest_attempt: dict[str, int] = {}
        self.finished: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        #: every (task, attempt, device) ever sent: to replay stale results
        self.sent: list[tuple[str, int, str]] = []
        self.next_id = 0

    # ---- events ---------------------------------------------------------------------------

    def step(self, name: str, *args: object) -> None:
        getattr(self, name)(*args)
        if self.pump and name != "dispatch":
            self.dispatch()
        self.check()

    def apply(self, commands: list[Command]) -> None:
        hedges_before = self.core.hedges_started
        for command in commands:
            if isinstance(command, Finished):
                assert command.task.state.final
                self.finished[command.task.id] += 1
            elif isinstance(command, Assign):
                device = self.core.devices[command.device_id]
                assert device.state is DeviceState.ONLINE
                assert device.link_up
                assert not device.draining
                assert command.task.task_type in device.task_types
                assert command.attempt == command.task.attempt
                assert command.task.live.get(command.attempt) == command.device_id
                assert command.task.not_before <= self.now  # backoff respected
                self.sent.append((command.task.id, command.attempt, command.device_id))
                if len(command.task.live) > 1:  # a hedge: allowed, and not beside its original
                    assert self.settings.hedging
                    assert command.task.task_type not in self.unhedged
                    assert command.attempt in command.task.hedge_attempts
                    live_devices = list(command.task.live.values())
                    assert len(set(live_devices)) == len(live_devices)
            elif isinstance(command, CancelAttempt):
                assert command.task_id in self.all_tasks
        if self.core.hedges_started > hedges_before:  # the budget held when they went out
            assert self.core.hedges_in_flight() <= self.core.hedge_limit()

    def submit(self, task_type: str) -> None:
        task_id = f"t{self.next_id}"
        self.next_id += 1
        task = RecordingTask(
            id=task_id, task_type=task_type, size_bytes=1000, submitted_at=self.now
        )
        self.all_tasks[task_id] = task
        self.core.submit(task, self.now)

    def dispatch(self) -> None:
        self.apply(self.core.dispatch(self.now))

    def register(self, device_id: str, report: int, stranger: bool) -> None:
        slots, types = DEVICES[device_id]
        old = self.core.devices.get(device_id)
        inflight = sorted(old.inflight) if old is not None else []
        # report a random subset of what the master sent, as running or as finished
        running = [t for i, (t, _) in enumerate(inflight) if report >> (2 * i) & 1]
        finished = [t for i, (t, _) in enumerate(inflight) if report >> (2 * i + 1) & 1]
        if stranger:
            running.append("stranger")
        device = Device(id=device_id, device_type="cpu", slots=slots, task_types=types)
        commands = self.core.register(device, running, finished, self.now)
        reconciled = reconciliation(commands)
        assert "stranger" not in reconciled.keep
        assert ("stranger" in reconciled.drop) == stranger
        assert set(reconciled.keep) <= set(running) | set(finished)
        self.apply(commands)

    def live_attempts(self) -> list[tuple[str, int, str]]:
        return sorted(
            (task.id, attempt, device_id)
            for task in self.core.tasks.values()
            for attempt, device_id in task.live.items()
        )

    def start(self, pick: int) -> None:
        live = self.live_attempts()
        if live:
            task_id, attempt, _ = live[pick % len(live)]
            self.apply(self.core.started(task_id, attempt, self.now))

    def complete(self, pick: int) -> None:
        live = self.live_attempts()
        if not live:
            return
        task_id, attempt, device_id = live[pick % len(live)]
        commands = self.core.done(task_id, attempt, device_id, 10.0, self.now)
        assert accepted(commands, task_id)
        self.accepted[task_id] += 1
        assert self.all_tasks[task_id].state is TaskState.DONE
        self.apply(commands)

    def fail(self, pick: int, kind: str) -> None:
        live = self.live_attempts()
        if not live:
            return
        task_id, attempt, device_id = live[pick % len(live)]
        task = self.all_tasks[task_id]
        failures = task.failures
        alone = len(task.live) == 1  # else its other attempt (a hedge) carries on
        self.apply(self.core.failed(task_id, attempt, device_id, kind, "boom", self.now))
        if not alone:
            assert task.failures == failures
            assert task.state in (TaskState.ASSIGNED, TaskState.RUNNING)
            return
        if kind in ("rejected", "cancelled", "device_lost"):
            assert task.failures == failures
            assert task.state is TaskState.QUEUED
        if kind == "bad_input":
            assert task.state is TaskState.DEAD

    def replay_old_result(self, pick: int) -> None:
        """A result for any attempt ever sent: accepted only if that attempt is still live."""
        if not self.sent:
            return
        task_id, attempt, device_id = self.sent[pick % len(self.sent)]
        task = self.all_tasks[task_id]
        was_live = task.live.get(attempt) == device_id and task_id in self.core.tasks
        commands = self.core.done(task_id, attempt, device_id, 10.0, self.now)
        ok = accepted(commands, task_id)
        assert ok == was_live
        if ok:
            self.accepted[task_id] += 1
        else:
            assert commands == []
        self.apply(commands)

    def cancel(self, pick: int) -> None:
        pending = sorted(self.core.tasks)
        if pending:
            self.apply(self.core.cancel(pending[pick % len(pending)], self.now, "test"))

    def tick(self, dt: float, beat: bool = False) -> None:
        """Time passes; with ``beat`` every known device sent a heartbeat meanwhile."""
        self.now += dt
        if beat:
            for device_id in sorted(self.core.devices):
                self.heartbeat(device_id)
        self.apply(self.core.tick(self.now))

    def heartbeat(self, device_id: str) -> None:
        self.apply(self.core.heartbeat(device_id, Metrics(cpu=0.5), self.now))

    def link_lost(self, device_id: str) -> None:
        self.apply(self.core.link_lost(device_id, self.now))

    def leave(self, device_id: str) -> None:
        self.apply(self.core.leave(device_id, self.now))

    def drain(self, device_id: str, on: bool) -> None:
        if device_id in self.core.devices:
            self.core.drain(device_id, on)

    # ---- what must always hold ------------------------------------------------------------

    def check(self) -> None:
        core = self.core
        queued_ids = set(core._ready) | {task_id for _, _, task_id in core._delayed}
        for device in core.devices.values():
            assert len(device.inflight) <= device.slots + device.prefetch, device
        for task_id, task in self.all_tasks.items():
            for move in task.moves:
                assert move in LEGAL_TRANSITIONS, (task_id, move)
            # the moves chain from queued to the current state, each where the last one ended
            states = [TaskState.QUEUED, *(to for _, to in task.moves)]
            assert [frm for frm, _ in task.moves] == states[:-1]
            assert states[-1] is task.state
            assert task.attempt >= self.highest_attempt.get(task_id, 0)
            self.highest_attempt[task_id] = task.attempt
            assert self.finished[task_id] <= 1
            assert self.accepted[task_id] <= 1
            if task.state.final:
                assert task_id not in core.tasks
                assert task.live == {}
                assert self.finished[task_id] == 1
            else:
                assert core.tasks.get(task_id) is task
                assert self.finished[task_id] == 0
            if task.state is TaskState.QUEUED:
                assert task.live == {}
                assert task_id in queued_ids, task_id
            elif task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                # its newest attempt is live, unless that was a hedge that ended while the
                # original runs on
                assert task.attempt in task.live or task.hedges
                assert task.live
                for attempt, device_id in task.live.items():
                    assert attempt <= task.attempt
                    assert (task_id, attempt) in core.devices[device_id].inflight
            if task.state is TaskState.DONE:
                assert self.accepted[task_id] == 1
            if task.state is TaskState.DEAD:
                assert task.errors
        assert core.queue_depth() == sum(
            1 for t in core.tasks.values() if t.state is TaskState.QUEUED
        )
        if not self.settings.hedging:
            assert core.hedges_started == 0
        hedged = [t for t in self.all_tasks.values() if t.hedges]
        if not self.settings.hedging or self.settings.hedge_budget == 0:
            assert not hedged
        assert all(t.task_type not in self.unhedged for t in hedged)
        assert core.hedges_won + core.hedges_lost == sum(
            1 for t in hedged if t.state is TaskState.DONE
        )

    def heal_and_finish(self) -> None:
        """Every device back, healthy and not draining, every attempt completing: all tasks end."""
        for device_id in DEVICES:
            self.register(device_id, report=-1, stranger=False)  # reports all it was sent
            self.core.drain(device_id, False)
        for _ in range(200):
            if not self.core.tasks:
                break
            for task_id, attempt, device_id in self.live_attempts():
                if task_id not in self.core.tasks:
                    continue  # another attempt of it (a hedge, or its original) won just now
                commands = self.core.done(task_id, attempt, device_id, 1.0, self.now)
                assert accepted(commands, task_id)
                self.accepted[task_id] += 1
                self.apply(commands)
            self.now += 1.0
            for device_id in DEVICES:
                self.heartbeat(device_id)
            self.apply(self.core.tick(self.now))
            self.dispatch()
            self.check()
        assert self.core.tasks == {}
        for task_id, task in self.all_tasks.items():
            assert task.state.final
            assert self.finished[task_id] == 1


device_ids = st.sampled_from(sorted(DEVICES))
picks = st.integers(min_value=0, max_value=10**6)
#: mostly short steps (beats, backoffs), sometimes past the suspect and dead limits
time_steps = st.one_of(
    st.floats(min_value=0.0, max_value=3.0), st.floats(min_value=0.0, max_value=40.0)
)


class CoreMachine(RuleBasedStateMachine):
    """Random events in a random order; the invariants are checked after every step."""

    harness: type[Harness] = Harness

    def __init__(self) -> None:
        super().__init__()
        self.h = self.harness("roundrobin", 0)

    @initialize(
        strategy=st.sampled_from(["roundrobin", "load"]),
        seed=st.integers(0, 1000),
        pump=st.booleans(),
    )
    def start_core(self, strategy: str, seed: int, pump: bool) -> None:
        self.h = self.harness(strategy, seed, pump)

    @rule(task_type=st.sampled_from(TASK_TYPES))
    def submit(self, task_type: str) -> None:
        self.h.step("submit", task_type)

    @rule()
    def dispatch(self) -> None:
        self.h.step("dispatch")

    @rule(device_id=device_ids, report=st.integers(0, 2**12), stranger=st.booleans())
    def register(self, device_id: str, report: int, stranger: bool) -> None:
        self.h.step("register", device_id, report, stranger)

    @rule(pick=picks)
    def start(self, pick: int) -> None:
        self.h.step("start", pick)

    @rule(pick=picks)
    def complete(self, pick: int) -> None:
        self.h.step("complete", pick)

    @rule(pick=picks, kind=st.sampled_from(FAIL_KINDS))
    def fail(self, pick: int, kind: str) -> None:
        self.h.step("fail", pick, kind)

    @rule(pick=picks)
    def replay_old_result(self, pick: int) -> None:
        self.h.step("replay_old_result", pick)

    @rule(pick=picks)
    def cancel(self, pick: int) -> None:
        self.h.step("cancel", pick)

    @rule(dt=time_steps, beat=st.booleans())
    def tick(self, dt: float, beat: bool) -> None:
        self.h.step("tick", dt, beat)

    @rule(device_id=device_ids)
    def heartbeat(self, device_id: str) -> None:
        self.h.step("heartbeat", device_id)

    @rule(device_id=device_ids)
    def link_lost(self, device_id: str) -> None:
        self.h.step("link_lost", device_id)

    @rule(device_id=device_ids)
    def leave(self, device_id: str) -> None:
        self.h.step("leave", device_id)

    @rule(device_id=device_ids, on=st.booleans())
    def drain(self, device_id: str, on: bool) -> None:
        self.h.step("drain", device_id, on)

    @invariant()
    def invariants_hold(self) -> None:
        self.h.check()  # also checked inside every step, after the pump


CoreMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_event_sequences_keep_the_cores_invariants = CoreMachine.TestCase


event = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(TASK_TYPES)),
    st.tuples(st.just("dispatch")),
    st.tuples(st.just("register"), device_ids, st.integers(0, 2**12), st.booleans()),
    st.tuples(st.just("start"), picks),
    st.tuples(st.just("complete"), picks),
    st.tuples(st.just("fail"), picks, st.sampled_from(FAIL_KINDS)),
    st.tuples(st.just("replay_old_result"), picks),
    st.tuples(st.just("cancel"), picks),
    st.tuples(st.just("tick"), time_steps, st.booleans()),
    st.tuples(st.just("heartbeat"), device_ids),
    st.tuples(st.just("link_lost"), device_ids),
    st.tuples(st.just("leave"), device_ids),
    st.tuples(st.just("drain"), device_ids, st.booleans()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(["roundrobin", "load"]),
    seed=st.integers(0, 1000),
    pump=st.booleans(),
    events=st.lists(event, max_size=40),
)
def test_after_any_history_every_task_ends_exactly_once_once_the_cluster_is_healthy(
    strategy, seed, pump, events
):
    h = Harness(strategy, seed, pump)
    for name, *args in events:
        h.step(name, *args)
    h.heal_and_finish()


@settings(max_examples=200, deadline=None)
@given(results=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["d0", "d1"])), max_size=12))
def test_a_task_accepts_exactly_one_result_whatever_arrives(results):
    h = Harness("roundrobin", 0)
    h.register("d0", 0, False)
    h.register("d1", 0, False)
    h.submit("layout")
    h.dispatch()
    task = h.all_tasks["t0"]
    (live_attempt, live_device), *_ = task.live.items()
    taken = 0
    for attempt, device_id in [*results, (live_attempt, live_device)]:
        expected = taken == 0 and (attempt, device_id) == (live_attempt, live_device)
        ok = accepted(h.core.done("t0", attempt, device_id, 1.0, 1.0), "t0")
        assert ok == expected
        taken += ok
    assert taken == 1
    assert task.state is TaskState.DONE
