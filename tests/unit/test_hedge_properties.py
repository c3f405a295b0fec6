"""Property test of hedged attempts: whatever the interleaving of two attempts' results, their
failures, cancels, devices lost and back, and master restarts from the journal, a task ends
once with one accepted result, and a hedge goes out only within the budget.

A cluster of three boards that can all run the task type keeps hedges frequent (the general
state machine in test_scheduler_properties.py covers hedging among everything else). A restart
is modelled as test_journal_replay_property.py does: the rows the core's ``Persist`` commands
wrote are read back into a fresh core, whose devices then rejoin.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesched.config import SchedulingSettings
from edgesched.core.commands import (
    Assign,
    Command,
    Finished,
    Persist,
    accepted,
    journaled_live,
)
from edgesched.core.core import Core
from edgesched.core.state import Device, DeviceState, Metrics, Task, TaskState
from edgesched.core.strategies import make_strategy

DEVICES = {"d0": 1, "d1": 2, "d2": 1}  #: id → slots; every one runs "layout"
#: state, attempt, failures, device of the newest attempt, the live attempts when the row's
#: attempt and device do not say them (``journaled_live``; the shell keeps them in timings)
Row = tuple[str, int, int, str, dict[int, str] | None]


class HedgeHarness:
    def __init__(self, seed: int, budget: float, factor: float, strategy: str) -> None:
        self.settings = SchedulingSettings(
            hedge_budget=budget, hedge_straggler_factor=factor, hedge_floor_s=0.0
        )
        self.strategy = strategy
        self.seed = seed
        self.core = self._core()
        self.now = 0.0
        self.journal: dict[str, Row] = {}
        self.finished: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.sent: list[tuple[str, int, str]] = []
        self.ids: list[str] = []

    def _core(self) -> Core:
        rng = random.Random(self.seed)
        return Core(self.settings, make_strategy(self.strategy, self.settings, rng), rng)

    def apply(self, commands: list[Command]) -> None:
        hedges_before = self.core.hedges_started
        for command in commands:
            if isinstance(command, Finished):
                self.finished[command.task.id] += 1
                assert self.finished[command.task.id] == 1, "a task ends once"
            elif isinstance(command, Persist):
                t = command.task
                live = journaled_live(t)
                self.journal[t.id] = (t.state.value, t.attempt, t.failures, t.device_id, live)
            elif isinstance(command, Assign):
                device = self.core.devices[command.device_id]
                assert device.schedulable
                boards = list(command.task.live.values())
                assert len(boards) == len(set(boards)), "never two attempts on one device"
                self.sent.append((command.task.id, command.attempt, command.device_id))
        if self.core.hedges_started > hedges_before:
            assert self.core.hedges_in_flight() <= self.core.hedge_limit()

    def register(self, device_id: str, report: int = -1) -> None:
        old = self.core.devices.get(device_id)
        held = sorted(old.inflight) if old is not None else []
        # after a restart the agent reports what it holds whatever the master knows of it
        held_ids = sorted({t for t, _, d in self.sent if d == device_id} | {t for t, _ in held})
        running = [t for i, t in enumerate(held_ids) if report >> i & 1]
        device = Device(
            id=device_id,
            device_type="cpu",
            slots=DEVICES[device_id],
            task_types=frozenset({"layout"}),
        )
        self.apply(self.core.register(device, running, [], self.now))

    def submit(self) -> None:
        task_id = f"t{len(self.ids)}"
        self.ids.append(task_id)
        task = Task(id=task_id, task_type="layout", size_bytes=1000, submitted_at=self.now)
        self.journal[task_id] = (TaskState.QUEUED.value, 0, 0, "", None)
        self.apply(self.core.submit(task, self.now))

    def live(self) -> list[tuple[str, int, str]]:
        return sorted((t.id, a, d) for t in self.core.tasks.values() for a, d in t.live.items())

    def result(self, pick: int) -> None:
        """A result of any attempt ever sent (live or not): taken only while it is live."""
        candidates = self.live() + self.sent
        if not candidates:
            return
        task_id, attempt, device_id = candidates[pick % len(candidates)]
        task = self.core.tasks.get(task_id)
        was_live = task is not None and task.live.get(attempt) == device_id
        commands = self.core.done(task_id, attempt, device_id, 10.0, self.now)
        assert accepted(commands, task_id) == was_live
        self.accepted[task_id] += accepted(commands, task_id)
        assert self.accepted[task_id] <= 1, "one accepted result"
        self.apply(commands)

    def fail(self, pick: int) -> None:
        live = self.live()
        if live:
            task_id, attempt, device_id = live[pick % len(live)]
            self.apply(self.core.failed(task_id, attempt, device_id, "backend", "x", self.now))

    def start(self, pick: int) -> None:
        live = self.live()
        if live:
            task_id, attempt, device_id = live[pick % len(live)]
            self.apply(self.core.started(task_id, attempt, self.now, device_id))

    def cancel(self, pick: int) -> None:
        pending = sorted(self.core.tasks)
        if pending:
            self.apply(self.core.cancel(pending[pick % len(pending)], self.now, "test"))

    def tick(self, dt: float, beats: int) -> None:
        self.now += dt
        for i, device_id in enumerate(sorted(DEVICES)):
            if beats >> i & 1:
                self.apply(self.core.heartbeat(device_id, Metrics(), self.now))
        self.apply(self.core.tick(self.now))

    def restart(self) -> None:
        """The master restarts: a fresh core restores the unfinished tasks from the journal."""
        self.core = self._core()
        for task_id, (state, attempt, failures, device_id, live) in sorted(self.journal.items()):
            if TaskState(state).final:
                continue
            task = Task(
                id=task_id,
                task_type="layout",
                size_bytes=1000,
                submitted_at=self.now,
                state=TaskState(state),
                attempt=attempt,
                failures=failures,
                device_id=device_id,
                live=dict(live or {}),
            )
            self.apply(self.core.restore(task, self.now))

    def step(self, name: str, *args: int | float) -> None:
        if name == "link_lost":
            self.apply(self.core.link_lost(sorted(DEVICES)[int(args[0]) % 3], self.now))
        elif name == "register":
            self.register(sorted(DEVICES)[int(args[0]) % 3], int(args[1]))
        else:
            getattr(self, name)(*args)
        self.apply(self.core.dispatch(self.now))  # as the shell does after every event
        sent = set(self.sent)
        for task in self.core.tasks.values():
            assert not task.state.final
            for attempt in task.hedge_attempts:  # a hedge the core counts on went out
                if attempt in task.live:
                    assert (task.id, attempt, task.live[attempt]) in sent
            if task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                # out on a board (the newest attempt may be a hedge that ended: the original
                # runs on), on at most two
                assert task.live and max(task.live) <= task.attempt
                assert len(task.live) <= 2

    def heal_and_finish(self) -> None:
        for device_id in DEVICES:
            self.register(device_id)
        for _ in range(100):
            if not self.core.tasks:
                break
            for task_id, attempt, device_id in self.live():
                if task_id in self.core.tasks:
                    commands = self.core.done(task_id, attempt, device_id, 1.0, self.now)
                    assert accepted(commands, task_id)
                    self.accepted[task_id] += 1
                    self.apply(commands)
            self.tick(1.0, beats=-1)
            self.apply(self.core.dispatch(self.now))
        assert self.core.tasks == {}
        for task_id in self.ids:
            assert self.finished[task_id] == 1
            assert self.accepted[task_id] <= 1
            if self.journal[task_id][0] == TaskState.DONE.value:
                assert self.accepted[task_id] == 1


picks = st.integers(0, 10**6)
event = st.one_of(
    st.tuples(st.just("submit")),
    st.tuples(st.just("start"), picks),
    st.tuples(st.just("result"), picks),
    st.tuples(st.just("fail"), picks),
    st.tuples(st.just("cancel"), picks),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0), st.integers(0, 7)),
    st.tuples(st.just("link_lost"), st.integers(0, 2)),
    st.tuples(st.just("register"), st.integers(0, 2), st.integers(0, 255)),
    st.tuples(st.just("restart")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    budget=st.sampled_from([0.01, 0.5, 1.0]),
    factor=st.sampled_from([0.0, 3.0]),
    strategy=st.sampled_from(["roundrobin", "ect"]),
    submitted=st.integers(1, 8),
    events=st.lists(event, max_size=40),
)
def test_a_hedged_task_ends_once_with_one_result_whatever_the_interleaving(
    seed, budget, factor, strategy, submitted, events
):
    h = HedgeHarness(seed, budget, factor, strategy)
    for device_id in DEVICES:
        h.register(device_id)
    for _ in range(submitted):  # beyond 4 ready, dispatch counts the openings first
        h.step("submit")
    for name, *args in events:
        h.step(name, *args)
    h.heal_and_finish()


def test_the_property_test_meets_hedges_and_restarts():
    """The interleavings above do reach the cases they are about (else they prove nothing)."""
    h = HedgeHarness(0, 1.0, 3.0, "roundrobin")
    for device_id in DEVICES:
        h.register(device_id)
    for _ in range(3):
        h.step("submit")
    h.step("start", 0)
    h.step("link_lost", 0)  # d0: its attempt is hedged on another board
    assert h.core.hedges_started == 1
    hedged = next(t for t in h.core.tasks.values() if t.hedges)
    assert h.journal[hedged.id][1] == hedged.attempt, "the hedge's assignment is journaled"
    both = dict(hedged.live)
    assert h.journal[hedged.id][4] == both
    h.step("restart")
    restored = h.core.tasks[hedged.id]
    assert restored.live == both, "both attempts restored: either board may report it"
    assert h.core.devices[hedged.device_id].state is DeviceState.SUSPECT  # until it rejoins
    h.heal_and_finish()
