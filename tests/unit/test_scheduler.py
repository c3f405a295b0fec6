"""The scheduling core with plain function calls: time is a float, commands are values."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesched.config import SchedulingSettings
from edgesched.core.commands import (
    Assign,
    CancelAttempt,
    Command,
    Expired,
    Finished,
    Persist,
    Reconciled,
    accepted,
    reconciliation,
)
from edgesched.core.core import Core
from edgesched.core.retry import COUNTED_KINDS, FATAL_KINDS, backoff_delay
from edgesched.core.state import Device, DeviceState, Metrics, Task, TaskState
from edgesched.core.strategies import make_strategy
from edgesched.errors import ConflictError, NotFoundError
from edgesched.kinds import FailureKind


def make_core(strategy: str = "roundrobin", **overrides: object) -> Core:
    overrides.setdefault("prefetch", 0)  # the slot mechanics alone; prefetch has its own tests
    s = SchedulingSettings(**overrides)  # type: ignore[arg-type]
    return Core(s, make_strategy(strategy, s, random.Random(0)), random.Random(0))


def add_device(
    core: Core,
    device_id: str,
    now: float = 0.0,
    *,
    slots: int = 1,
    task_types: Iterable[str] = ("layout",),
    running: Iterable[str] = (),
    finished: Iterable[str] = (),
) -> tuple[Device, Reconciled, list[Command]]:
    device = Device(id=device_id, device_type="cpu", slots=slots, task_types=frozenset(task_types))
    commands = core.register(device, running, finished, now)
    rest: list[Command] = [c for c in commands if not isinstance(c, Reconciled)]
    return device, reconciliation(commands), rest


def new_task(task_id: str, task_type: str = "layout", now: float = 0.0) -> Task:
    return Task(id=task_id, task_type=task_type, size_bytes=1000, submitted_at=now)


def submit(core: Core, *task_ids: str, now: float = 0.0, task_type: str = "layout") -> list[Task]:
    tasks = [new_task(task_id, task_type, now) for task_id in task_ids]
    for task in tasks:
        core.submit(task, now)
    return tasks


def state_of(device: Device) -> DeviceState:
    """The device's state, read afresh (keeps mypy from narrowing it across calls)."""
    return device.state


def task_state(task: Task) -> TaskState:
    """The task's state, read afresh (keeps mypy from narrowing it across calls)."""
    return task.state


def assigns(commands: Sequence[Command]) -> list[Assign]:
    return [c for c in commands if isinstance(c, Assign)]


def placed(commands: Sequence[Command]) -> list[tuple[str, str, int]]:
    return [(a.task.id, a.device_id, a.attempt) for a in assigns(commands)]


def of_type(commands: Sequence[Command], kind: type) -> list[Command]:
    return [c for c in commands if isinstance(c, kind)]


def one_assigned(core: Core, now: float = 0.0) -> tuple[Task, Device]:
    """One device with one slot and one task on it."""
    device, _, _ = add_device(core, "d1", now)
    (task,) = submit(core, "t1", now=now)
    assert placed(core.dispatch(now)) == [("t1", "d1", 1)]
    return task, device


# ---- submit and dispatch --------------------------------------------------------------------


def test_a_submitted_task_is_assigned_on_dispatch_without_a_journal_write():
    core = make_core()
    add_device(core, "d1")
    (task,) = submit(core, "t1", now=1.0)
    commands = core.dispatch(2.0)
    # the single attempt after the journaled one is not journaled (needs_persist)
    assert commands == [Assign(task, "d1", 1)]
    assert task.state is TaskState.ASSIGNED
    assert task.attempt == 1
    assert task.live == {1: "d1"}
    assert task.device_id == "d1"
    assert task.assigned_at == 2.0
    assert ("t1", 1) in core.devices["d1"].inflight
    assert core.devices["d1"].sent_since_heartbeat == 1


def test_a_task_reaches_the_journal_with_its_end_not_its_start():
    core = make_core()
    add_device(core, "d1")
    (task,) = submit(core, "t1", now=1.0)
    core.dispatch(2.0)
    assert core.started("t1", 1, 2.5, "d1") == []
    assert task.state is TaskState.RUNNING
    done = core.done("t1", 1, "d1", 10.0, 3.0)
    assert Persist(task) in done and Finished(task) in done
    assert task.persisted_attempt == 1


def test_a_failed_attempt_is_journaled_and_the_next_one_is_not():
    core = make_core()
    add_device(core, "d1")
    (task,) = submit(core, "t1")
    core.dispatch(1.0)
    assert Persist(task) in core.failed("t1", 1, "d1", FailureKind.BACKEND, "boom", 1.5)
    assert task.persisted_attempt == 1
    core.tick(task.not_before)  # the backoff is over
    later = core.dispatch(task.not_before)
    assert [type(c) for c in later] == [Assign] and task.attempt == 2


def test_attempts_after_a_restart_are_numbered_past_one_that_was_never_journaled():
    # the journal holds the task queued at attempt 0; before the restart attempt 1 went out to
    # d1 (not journaled). Restored, the task must never issue attempt 1 again: d1's late
    # result of it is refused, and the next attempt is journaled before it is sent.
    core = make_core()
    add_device(core, "d1")
    restored = Task(id="t1", task_type="layout", size_bytes=1, submitted_at=0.0, attempt=0)
    core.restore(restored, 0.0)
    assert restored.attempt == 1 and restored.persisted_attempt == 0
    commands = core.dispatch(1.0)
    assert Assign(restored, "d1", 2) in commands and Persist(restored) in commands
    assert core.done("t1", 1, "d1", 5.0, 2.0) == []  # the unjournaled attempt's result
    assert accepted(core.done("t1", 2, "d1", 5.0, 2.0), "t1")


def test_a_second_live_attempt_is_journaled():
    from edgesched.core.commands import needs_persist

    task = new_task("t1")
    task.attempt, task.persisted_attempt, task.live = 2, 1, {1: "d1", 2: "d2"}
    assert needs_persist(task)
    task.live = {2: "d2"}
    assert not needs_persist(task)


def test_a_submitted_task_waits_in_the_queue_until_there_is_a_device():
    core = make_core()
    (task,) = submit(core, "t1")
    assert core.dispatch(0.0) == []
    assert core.queue_depth() == 1
    add_device(core, "d1", 1.0)
    assert placed(core.dispatch(1.0)) == [("t1", "d1", 1)]
    assert core.queue_depth() == 0
    assert task.queued_at == 0.0


def test_dispatch_with_nothing_queued_does_nothing():
    core = make_core()
    add_device(core, "d1")
    assert core.dispatch(0.0) == []


def test_a_device_never_gets_more_tasks_than_it_has_slots():
    core = make_core()
    add_device(core, "big", slots=2)
    add_device(core, "small", slots=1)
    submit(core, *(f"t{i}" for i in range(10)))
    commands = core.dispatch(0.0)
    per_device = [a.device_id for a in assigns(commands)]
    assert per_device.count("big") == 2
    assert per_device.count("small") == 1
    assert core.queue_depth() == 7
    assert core.dispatch(0.0) == []
    for device in core.devices.values():
        assert len(device.inflight) <= device.slots
        assert device.free_slots == 0


def test_a_freed_slot_takes_the_next_task():
    core = make_core()
    add_device(core, "d1")
    submit(core, "t1", "t2")
    assert placed(core.dispatch(0.0)) == [("t1", "d1", 1)]
    ok = accepted(core.done("t1", 1, "d1", 5.0, 1.0), "t1")
    assert ok
    assert placed(core.dispatch(1.0)) == [("t2", "d1", 1)]


def test_a_device_that_cannot_run_the_task_type_gets_nothing_and_the_task_waits():
    core = make_core()
    add_device(core, "layout-only", task_types=["layout"])
    (task,) = submit(core, "t1", task_type="ocr")
    assert core.dispatch(0.0) == []
    assert task.state is TaskState.QUEUED
    assert core.devices["layout-only"].inflight == set()
    add_device(core, "ocr-box", 1.0, task_types=["ocr"])
    assert placed(core.dispatch(1.0)) == [("t1", "ocr-box", 1)]


def test_only_devices_that_can_run_the_task_type_are_candidates():
    core = make_core()
    add_device(core, "a", slots=5, task_types=["ocr"])
    add_device(core, "b", slots=5, task_types=["layout"])
    submit(core, "t1", "t2", "t3")
    assert {a.device_id for a in assigns(core.dispatch(0.0))} == {"b"}


def test_round_robin_through_the_core_spreads_tasks_over_devices():
    core = make_core()
    for name in ("a", "b", "c"):
        add_device(core, name, slots=2)
    submit(core, *(f"t{i}" for i in range(6)))
    assert [a.device_id for a in assigns(core.dispatch(0.0))] == ["a", "b", "c", "a", "b", "c"]


def test_the_load_strategy_through_the_core_does_not_herd_a_burst_onto_one_device():
    core = make_core("load")
    add_device(core, "a", slots=4)
    add_device(core, "b", slots=4)
    submit(core, *(f"t{i}" for i in range(4)))
    per_device = [a.device_id for a in assigns(core.dispatch(0.0))]
    assert sorted(per_device) == ["a", "a", "b", "b"]


def test_the_queue_is_first_in_first_out():
    core = make_core()
    add_device(core, "d1")
    names = [f"t{i}" for i in range(5)]
    submit(core, *names)
    order = []
    now = 0.0
    for _ in names:
        (assign,) = assigns(core.dispatch(now))
        order.append(assign.task.id)
        now += 1.0
        core.done(assign.task.id, assign.attempt, "d1", 1.0, now)
    assert order == names


def test_a_task_nobody_can_run_keeps_its_place_at_the_head_of_the_queue():
    core = make_core()
    add_device(core, "d1", slots=1, task_types=["layout"])
    submit(core, "t1", task_type="ocr")
    submit(core, "t2", "t3")
    assert placed(core.dispatch(0.0)) == [("t2", "d1", 1)]
    core.done("t2", 1, "d1", 1.0, 1.0)
    add_device(core, "both", 1.0, slots=1, task_types=["layout", "ocr"])
    # t1 was first in and is still first: it goes before t3
    assert [a.task.id for a in assigns(core.dispatch(1.0))] == ["t1", "t3"]


def test_started_moves_an_assigned_task_to_running():
    core = make_core()
    task, _ = one_assigned(core)
    assert core.started("t1", 1, 3.0) == []  # not journaled: see needs_persist
    assert task.state is TaskState.RUNNING
    assert task.started_at == 3.0
    # a second start, a stale attempt or an unknown task change nothing
    assert core.started("t1", 1, 4.0) == []
    assert core.started("t1", 7, 4.0) == []
    assert core.started("nope", 1, 4.0) == []
    assert task.started_at == 3.0


# ---- results --------------------------------------------------------------------------------


def test_a_result_finishes_the_task_once():
    core = make_core()
    task, device = one_assigned(core)
    core.started("t1", 1, 1.0)
    commands = core.done("t1", 1, "d1", 40.0, 2.0)
    ok = accepted(commands, "t1")
    assert ok
    assert commands == [Persist(task), Finished(task)]
    assert task.state is TaskState.DONE
    assert task.finished_at == 2.0
    assert "t1" not in core.tasks
    assert device.inflight == set()
    assert device.tasks_done == 1
    assert device.mean_service_ms == pytest.approx(40.0)


def test_a_second_result_of_the_same_attempt_is_discarded():
    core = make_core()
    task, device = one_assigned(core)
    assert accepted(core.done("t1", 1, "d1", 40.0, 2.0), "t1")
    assert core.done("t1", 1, "d1", 40.0, 3.0) == []
    assert task.state is TaskState.DONE
    assert task.finished_at == 2.0
    assert device.tasks_done == 1


def test_a_result_of_an_attempt_that_was_never_sent_is_discarded():
    core = make_core()
    task, _ = one_assigned(core)
    add_device(core, "d2")
    assert core.done("t1", 2, "d1", 1.0, 1.0) == []
    assert core.done("t1", 1, "d2", 1.0, 1.0) == []
    assert core.done("unknown", 1, "d1", 1.0, 1.0) == []
    assert task.state is TaskState.ASSIGNED


def test_a_negative_service_time_does_not_lower_the_devices_mean():
    core = make_core()
    _, device = one_assigned(core)
    core.done("t1", 1, "d1", -100.0, 1.0)
    assert device.service_ms_total == 0.0


# ---- failures and retries ------------------------------------------------------------------


def test_a_backend_failure_counts_and_backs_off_before_the_retry():
    core = make_core()
    task, device = one_assigned(core)
    core.heartbeat("d1", Metrics(), 10.0)
    commands = core.failed("t1", 1, "d1", "backend", "onnx exploded", 10.0)
    assert commands == [Persist(task)]
    assert task.state is TaskState.QUEUED
    assert task.failures == 1
    assert task.live == {}
    assert device.inflight == set()
    delay = task.not_before - 10.0
    assert 0.0 < delay <= core.settings.retry_backoff_s
    assert core.next_wakeup() == task.not_before
    # the slot is free but the task must wait for its backoff
    assert core.dispatch(10.0) == []
    core.tick(10.0 + delay / 2)
    assert core.dispatch(10.0 + delay / 2) == []
    core.tick(task.not_before)
    assert core.next_wakeup() is None
    assert placed(core.dispatch(task.not_before)) == [("t1", "d1", 2)]


def test_the_error_history_records_each_attempt():
    core = make_core()
    task, _ = one_assigned(core)
    core.failed("t1", 1, "d1", "backend", "boom", 5.0)
    (error,) = task.errors
    assert error.to_dict() == {
        "attempt": 1,
        "device_id": "d1",
        "kind": "backend",
        "message": "boom",
        "at": 5.0,
        "counted": True,
    }


def test_a_task_is_dead_after_max_attempts_counted_failures():
    core = make_core(max_attempts=3)
    task, _ = one_assigned(core)
    now = 0.0
    commands: list[Command] = []
    for attempt in (1, 2, 3):
        now += 100.0
        core.heartbeat("d1", Metrics(), now)
        commands = core.failed("t1", attempt, "d1", "backend", f"boom {attempt}", now)
        if attempt < 3:
            assert task.state is TaskState.QUEUED
            core.tick(now + 5.0)
            assert placed(core.dispatch(now + 5.0)) == [("t1", "d1", attempt + 1)]
    assert task.state is TaskState.DEAD
    assert commands == [Persist(task), Finished(task)]
    assert task.failures == 3
    assert [(e.attempt, e.kind, e.counted) for e in task.errors] == [
        (1, "backend", True),
        (2, "backend", True),
        (3, "backend", True),
    ]
    assert task.error == "failed 3 times; last: backend: boom 3"
    assert "t1" not in core.tasks
    assert core.dispatch(now + 1000.0) == []


def test_a_bad_input_failure_is_dead_at_once():
    core = make_core(max_attempts=5)
    task, device = one_assigned(core)
    commands = core.failed("t1", 1, "d1", "bad_input", "not a picture", 1.0)
    assert commands == [Persist(task), Finished(task)]
    assert task.state is TaskState.DEAD
    assert task.error == "bad_input: not a picture"
    assert task.errors[0].counted
    assert "t1" not in core.tasks
    assert device.inflight == set()


@pytest.mark.parametrize("kind", ["rejected", "cancelled", "device_lost", "link"])
def test_an_infrastructure_failure_re_queues_without_counting_or_waiting(kind):
    core = make_core(max_attempts=1)
    task, _ = one_assigned(core)
    assert core.failed("t1", 1, "d1", kind, "full", 4.0) == [Persist(task)]
    assert task.state is TaskState.QUEUED
    assert task.failures == 0
    assert task.not_before == 4.0
    assert not task.errors[0].counted
    assert core.retries == 1
    assert placed(core.dispatch(4.0)) == [("t1", "d1", 2)]


def test_a_missed_deadline_does_not_count_against_max_attempts():
    # DESIGN §6: device lost, link broken and deadline missed are the infrastructure's failures
    core = make_core(max_attempts=1)
    task, _ = one_assigned(core)
    core.failed("t1", 1, "d1", "deadline", "took too long", 4.0)
    assert task.state is TaskState.QUEUED
    assert task.failures == 0
    assert "deadline" not in COUNTED_KINDS


def test_a_failure_report_for_a_stale_or_unknown_attempt_is_ignored():
    core = make_core()
    task, _ = one_assigned(core)
    assert core.failed("t1", 9, "d1", "backend", "x", 1.0) == []
    assert core.failed("nope", 1, "d1", "backend", "x", 1.0) == []
    assert task.state is TaskState.ASSIGNED
    assert task.errors == []


def test_a_rejected_input_at_intake_is_dead_at_once():
    core = make_core()
    task = new_task("t1")
    commands = core.reject(task, 2.0, "not a JPEG")
    assert commands == [Persist(task), Finished(task)]
    assert task.state is TaskState.DEAD
    assert task.error == "bad_input: not a JPEG"
    assert "t1" not in core.tasks


def test_counted_and_fatal_failure_kinds():
    assert {"bad_input", "backend"} <= COUNTED_KINDS
    assert FATAL_KINDS <= COUNTED_KINDS
    assert {"rejected", "device_lost", "cancelled"}.isdisjoint(COUNTED_KINDS)


# ---- backoff --------------------------------------------------------------------------------


def test_no_backoff_before_the_first_failure_or_without_a_base():
    rng = random.Random(0)
    assert backoff_delay(0, 0.5, 30.0, rng) == 0.0
    assert backoff_delay(-3, 0.5, 30.0, rng) == 0.0
    assert backoff_delay(4, 0.0, 30.0, rng) == 0.0


def test_backoff_is_drawn_from_the_injected_rng():
    assert backoff_delay(3, 0.5, 30.0, random.Random(5)) == random.Random(5).uniform(0.0, 2.0)


@settings(max_examples=200, deadline=None)
@given(
    failures=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=300.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_stays_within_zero_and_the_capped_exponential(failures, base, cap, seed):
    delay = backoff_delay(failures, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** (failures - 1))


def test_backoff_ceiling_doubles_per_failure_until_the_cap():
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Top(0)
    assert [backoff_delay(n, 0.5, 3.0, top) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_after_very_many_failures_is_the_cap():
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert backoff_delay(2000, 0.5, 30.0, Top(0)) == 30.0
    assert 0.0 <= backoff_delay(10**6, 0.5, 30.0, random.Random(1)) <= 30.0


# ---- cancel ---------------------------------------------------------------------------------


def test_cancelling_an_assigned_task_tells_its_device():
    core = make_core()
    task, device = one_assigned(core)
    commands = core.cancel("t1", 3.0, "operator said so")
    assert commands == [
        CancelAttempt("t1", "d1", 1, "task cancelled"),
        Persist(task),
        Finished(task),
    ]
    assert task.state is TaskState.CANCELLED
    assert task.error == "operator said so"
    assert task.finished_at == 3.0
    assert "t1" not in core.tasks
    # the device keeps the slot until it reports the attempt ended
    assert device.inflight == {("t1", 1)}
    assert core.failed("t1", 1, "d1", "cancelled", "stopped", 4.0) == []
    assert device.inflight == set()


def test_cancelling_on_a_device_whose_link_is_down_frees_the_slot_at_once():
    core = make_core()
    _, device = one_assigned(core)
    core.link_lost("d1", 1.0)
    core.cancel("t1", 2.0)
    assert device.inflight == set()


def test_cancelling_a_queued_task_sends_no_cancel_and_it_is_never_dispatched():
    core = make_core()
    (task,) = submit(core, "t1")
    assert core.cancel("t1", 1.0) == [Persist(task), Finished(task)]
    assert task.state is TaskState.CANCELLED
    add_device(core, "d1", 2.0)
    assert core.dispatch(2.0) == []
    assert core.queue_depth() == 0


def test_cancelling_an_unknown_task_raises_not_found():
    with pytest.raises(NotFoundError):
        make_core().cancel("ghost", 0.0)


def test_cancelling_a_finished_task_raises():
    core = make_core()
    one_assigned(core)
    core.done("t1", 1, "d1", 1.0, 1.0)
    with pytest.raises((NotFoundError, ConflictError)):
        core.cancel("t1", 2.0)


def test_cancelling_twice_raises_the_second_time():
    core = make_core()
    submit(core, "t1")
    core.cancel("t1", 1.0)
    with pytest.raises((NotFoundError, ConflictError)):
        core.cancel("t1", 2.0)


def test_a_result_after_a_cancel_is_discarded_but_frees_the_slot():
    core = make_core()
    task, device = one_assigned(core)
    core.cancel("t1", 1.0)
    assert core.done("t1", 1, "d1", 5.0, 2.0) == []
    assert task.state is TaskState.CANCELLED
    assert device.inflight == set()


# ---- health: heartbeats, suspect, dead ------------------------------------------------------


def test_a_silent_device_is_suspect_after_the_missed_beats_then_dead_after_the_grace():
    core = make_core()  # 3 beats of 2 s, 30 s grace
    task, device = one_assigned(core)
    assert core.tick(6.0) == []
    assert state_of(device) is DeviceState.ONLINE
    assert core.tick(6.5) == []
    assert state_of(device) is DeviceState.SUSPECT
    assert not device.schedulable
    assert task.state is TaskState.ASSIGNED
    # the grace counts from when the silence crossed the limit (6 s), not from the tick
    assert core.tick(35.9) == []
    assert state_of(device) is DeviceState.SUSPECT
    commands = core.tick(36.1)
    assert state_of(device) is DeviceState.DEAD
    assert commands == [Expired("d1"), Persist(task)]
    assert task_state(task) is TaskState.QUEUED
    assert task.failures == 0
    assert [(e.kind, e.counted) for e in task.errors] == [("device_lost", False)]
    assert device.inflight == set()
    # nothing more happens to a dead device
    assert core.tick(100.0) == []


def test_the_tasks_of_a_dead_device_are_dispatched_elsewhere():
    core = make_core()
    one_assigned(core)
    core.tick(7.0)
    core.tick(37.0)
    add_device(core, "d2", 37.0)
    assert placed(core.dispatch(37.0)) == [("t1", "d2", 2)]


def test_heartbeats_keep_a_device_online():
    core = make_core()
    _, device = one_assigned(core)
    for now in range(5, 100, 5):
        core.heartbeat("d1", Metrics(cpu=0.5), float(now))
        core.tick(float(now) + 4.0)
    assert state_of(device) is DeviceState.ONLINE
    assert device.heartbeats == 19


def test_any_frame_counts_as_a_sign_of_life():
    core = make_core()
    _, device = one_assigned(core)
    core.seen("d1", 5.0)
    core.tick(10.0)
    assert state_of(device) is DeviceState.ONLINE
    assert device.last_seen == 5.0
    core.seen("unknown", 5.0)  # no error


def test_a_heartbeat_records_metrics_and_resets_the_optimistic_count():
    core = make_core()
    _, device = one_assigned(core)
    assert device.sent_since_heartbeat == 1
    metrics = Metrics(cpu=0.25, memory=0.5, xpu=0.75)
    assert core.heartbeat("d1", metrics, 1.0) == []
    assert device.metrics is metrics
    assert device.sent_since_heartbeat == 0
    assert device.last_seen == 1.0


def test_a_heartbeat_from_an_unknown_device_is_ignored():
    assert make_core().heartbeat("ghost", Metrics(), 1.0) == []


def test_a_lost_link_makes_a_device_suspect_at_once_and_it_gets_no_new_tasks():
    core = make_core()
    device, _, _ = add_device(core, "d1", slots=4)
    core.link_lost("d1", 1.0)
    assert state_of(device) is DeviceState.SUSPECT
    assert device.suspect_since == 1.0
    submit(core, "t1", now=1.0)
    assert core.dispatch(1.0) == []
    # a heartbeat without the link does not bring it back
    core.heartbeat("d1", Metrics(), 2.0)
    assert state_of(device) is DeviceState.SUSPECT


def test_a_lost_link_leads_to_death_after_the_grace():
    core = make_core()
    task, device = one_assigned(core)
    core.link_lost("d1", 1.0)
    core.heartbeat("d1", Metrics(), 20.0)  # frames that slip through do not reset the grace
    assert core.tick(30.9) == []
    assert core.tick(31.0) == [Expired("d1"), Persist(task)]
    assert state_of(device) is DeviceState.DEAD


def test_a_heartbeat_brings_a_suspect_device_with_a_live_link_back_online():
    core = make_core()
    device, _, _ = add_device(core, "d1")
    core.tick(10.0)
    assert state_of(device) is DeviceState.SUSPECT
    core.heartbeat("d1", Metrics(), 11.0)
    assert state_of(device) is DeviceState.ONLINE
    submit(core, "t1", now=11.0)
    assert placed(core.dispatch(11.0)) == [("t1", "d1", 1)]


def test_a_heartbeat_does_not_revive_a_dead_device():
    core = make_core()
    device, _, _ = add_device(core, "d1")
    core.tick(10.0)
    core.tick(40.0)
    assert state_of(device) is DeviceState.DEAD
    core.heartbeat("d1", Metrics(), 41.0)
    assert state_of(device) is DeviceState.DEAD
    core.link_lost("d1", 42.0)
    assert state_of(device) is DeviceState.DEAD


def test_a_device_that_leaves_gives_its_tasks_back_without_counting():
    core = make_core()
    task, device = one_assigned(core)
    assert core.leave("d1", 2.0) == [Persist(task)]
    assert state_of(device) is DeviceState.LEFT
    assert task.state is TaskState.QUEUED
    assert task.failures == 0
    assert core.leave("ghost", 2.0) == []


# ---- reconnect and reconciliation -----------------------------------------------------------


def test_a_reconnecting_device_keeps_what_it_runs_and_loses_what_it_does_not():
    core = make_core()
    add_device(core, "d1", slots=3)
    t1, t2, t3 = submit(core, "t1", "t2", "t3")
    core.dispatch(0.0)
    core.link_lost("d1", 1.0)
    _, reconciled, commands = add_device(
        core, "d1", 5.0, slots=3, running=["t1", "stranger"], finished=["t2"]
    )
    assert reconciled == Reconciled("d1", keep=["t1", "t2"], drop=["stranger"])
    assert commands == [Persist(t3)]
    assert t1.live == {1: "d1"}
    assert t2.live == {1: "d1"}
    assert t3.state is TaskState.QUEUED
    assert t3.failures == 0
    assert t3.errors[0].kind == "device_lost"
    device = core.devices["d1"]
    assert state_of(device) is DeviceState.ONLINE
    assert device.link_up
    assert device.inflight == {("t1", 1), ("t2", 1)}
    # its kept attempts still finish normally, and the lost one goes out again
    assert accepted(core.done("t1", 1, "d1", 1.0, 6.0), "t1")
    assert placed(core.dispatch(6.0)) == [("t3", "d1", 2)]


def test_a_reconnecting_device_keeps_its_history_and_drain_flag():
    core = make_core()
    add_device(core, "d1", 1.0)
    submit(core, "t1")
    core.dispatch(1.0)
    core.done("t1", 1, "d1", 30.0, 2.0)
    core.drain("d1", True)
    device, _, _ = add_device(core, "d1", 9.0)
    assert device.tasks_done == 1
    assert device.service_ms_total == 30.0
    assert device.joined_at == 1.0
    assert device.draining


def test_a_device_that_comes_back_after_it_was_declared_dead_is_told_to_drop_its_old_tasks():
    core = make_core()
    one_assigned(core)
    core.tick(7.0)
    core.tick(37.0)
    _, reconciled, commands = add_device(core, "d1", 40.0, running=["t1"])
    assert reconciled == Reconciled("d1", keep=[], drop=["t1"])
    assert commands == []
    assert core.devices["d1"].state is DeviceState.ONLINE


def test_a_result_from_an_attempt_superseded_by_a_device_death_is_discarded():
    core = make_core()
    task, _ = one_assigned(core)
    core.link_lost("d1", 1.0)
    core.tick(31.0)
    add_device(core, "d2", 31.0)
    assert placed(core.dispatch(31.0)) == [("t1", "d2", 2)]
    assert core.done("t1", 1, "d1", 1.0, 32.0) == []
    assert task.state is TaskState.ASSIGNED
    commands = core.done("t1", 2, "d2", 1.0, 33.0)
    ok = accepted(commands, "t1")
    assert ok
    assert Finished(task) in commands
    assert task.device_id == "d2"


def test_a_first_registration_reports_nothing_to_keep_and_drops_whatever_it_runs():
    core = make_core()
    _, reconciled, commands = add_device(core, "d1", running=["old"])
    assert reconciled == Reconciled("d1", keep=[], drop=["old"])
    assert commands == []


def test_a_reconnecting_device_is_told_to_drop_a_task_that_was_cancelled_meanwhile():
    core = make_core()
    one_assigned(core)
    core.cancel("t1", 1.0)  # CancelAttempt goes out on the link ...
    core.link_lost("d1", 1.1)  # ... which breaks before it arrives
    device, reconciled, commands = add_device(core, "d1", 2.0, running=["t1"])
    assert reconciled == Reconciled("d1", keep=[], drop=["t1"])
    assert commands == []
    assert device.inflight == set()


def test_a_reconnecting_device_is_told_to_drop_an_attempt_finished_elsewhere():
    core = make_core()
    add_device(core, "d1")
    (task,) = submit(core, "t1")
    core.dispatch(0.0)
    core.link_lost("d1", 1.0)
    core.tick(31.0)  # d1 dead: t1 goes to d2 as attempt 2 and finishes there
    add_device(core, "d2", 31.0)
    core.dispatch(31.0)
    assert accepted(core.done("t1", 2, "d2", 1.0, 32.0), "t1")
    _, reconciled, _ = add_device(core, "d1", 33.0, running=["t1"])
    assert reconciled == Reconciled("d1", keep=[], drop=["t1"])
    assert task.state is TaskState.DONE


# ---- restart: restore from the journal -----------------------------------------------------


def assigned_from_journal(task_id: str, device_id: str, attempt: int) -> Task:
    task = new_task(task_id)
    task.state = TaskState.ASSIGNED
    task.attempt = attempt
    task.device_id = device_id
    return task


def test_a_restored_assigned_task_waits_on_a_placeholder_device_that_dies_after_the_grace():
    core = make_core()
    task = assigned_from_journal("t1", "gone", 2)
    core.restore(task, 100.0)
    device = core.devices["gone"]
    assert state_of(device) is DeviceState.SUSPECT
    assert not device.link_up
    assert device.inflight == {("t1", 2)}
    assert task.live == {2: "gone"}
    assert core.tick(129.9) == []
    assert core.tick(130.0) == [Expired("gone"), Persist(task)]
    assert state_of(device) is DeviceState.DEAD
    assert task.state is TaskState.QUEUED
    assert task.failures == 0
    add_device(core, "d2", 130.0)
    assert placed(core.dispatch(130.0)) == [("t1", "d2", 3)]


def test_a_restored_task_stays_with_its_device_if_it_registers_again_in_time():
    core = make_core()
    task = assigned_from_journal("t1", "d1", 2)
    core.restore(task, 100.0)
    _, reconciled, commands = add_device(core, "d1", 110.0, running=["t1"])
    assert reconciled == Reconciled("d1", keep=["t1"], drop=[])
    assert commands == []
    assert core.tick(120.0) == []  # no placeholder left to die
    assert core.devices["d1"].state is DeviceState.SUSPECT  # silent since 110: suspect, alive
    assert accepted(core.done("t1", 2, "d1", 1.0, 121.0), "t1")


def test_a_restored_task_is_queued_again_if_its_device_registers_without_it():
    core = make_core()
    task = assigned_from_journal("t1", "d1", 2)
    core.restore(task, 100.0)
    _, reconciled, commands = add_device(core, "d1", 101.0, running=[])
    assert reconciled == Reconciled("d1", keep=[], drop=[])
    assert commands == [Persist(task)]
    assert task.state is TaskState.QUEUED
    assert placed(core.dispatch(101.0)) == [("t1", "d1", 3)]


def test_a_task_restored_onto_a_device_already_declared_dead_is_queued_again():
    core = make_core()
    device, _, _ = add_device(core, "d1")
    core.leave("d1", 1.0)
    assert state_of(device) is DeviceState.LEFT
    task = assigned_from_journal("t1", "d1", 1)
    core.restore(task, 2.0)
    assert task.state is TaskState.QUEUED
    assert task.live == {}
    assert task.failures == 0
    assert [(e.kind, e.counted) for e in task.errors] == [("device_lost", False)]
    assert device.inflight == set()
    add_device(core, "d2", 2.0)
    assert placed(core.dispatch(2.0)) == [("t1", "d2", 2)]


def test_restored_tasks_of_the_same_missing_device_share_one_placeholder():
    core = make_core()
    core.restore(assigned_from_journal("t1", "gone", 1), 0.0)
    core.restore(assigned_from_journal("t2", "gone", 4), 0.0)
    assert core.devices["gone"].inflight == {("t1", 1), ("t2", 4)}
    assert len(core.tick(30.0)) == 3  # Expired + one Persist per task


def test_a_restored_queued_task_is_dispatched_normally():
    core = make_core()
    task = new_task("t1")
    core.restore(task, 5.0)
    add_device(core, "d1", 5.0)
    # attempt 2: attempt 1 may have gone out unjournaled before the restart
    assert placed(core.dispatch(5.0)) == [("t1", "d1", 2)]


def test_a_restored_queued_task_still_in_backoff_waits_for_it():
    core = make_core()
    task = new_task("t1")
    task.not_before = 12.0
    core.restore(task, 5.0)
    add_device(core, "d1", 5.0)
    assert core.dispatch(5.0) == []
    assert core.next_wakeup() == 12.0
    core.heartbeat("d1", Metrics(), 11.0)
    core.tick(12.0)
    assert placed(core.dispatch(12.0)) == [("t1", "d1", 2)]


# ---- drain ----------------------------------------------------------------------------------


def test_a_draining_device_gets_no_new_tasks_but_finishes_its_own():
    core = make_core()
    add_device(core, "d1", slots=2)
    submit(core, "t1")
    core.dispatch(0.0)
    assert core.drain("d1", True) == []
    assert core.devices["d1"].draining
    submit(core, "t2")
    assert core.dispatch(1.0) == []
    assert accepted(core.done("t1", 1, "d1", 1.0, 2.0), "t1")
    assert core.dispatch(2.0) == []
    core.drain("d1", False)
    assert placed(core.dispatch(3.0)) == [("t2", "d1", 1)]


def test_draining_an_unknown_device_raises_not_found():
    with pytest.raises(NotFoundError):
        make_core().drain("ghost", True)


# ---- prefetch: assignments beyond the slots, queued on the board ---------------------------------


def test_with_prefetch_a_device_takes_its_slots_plus_the_prefetch_and_no_more():
    core = make_core(prefetch=2)
    device, _, _ = add_device(core, "d1", slots=3)
    submit(core, *(f"t{i}" for i in range(10)))
    assert len(assigns(core.dispatch(0.0))) == 5
    assert device.openings == 0 and device.free_slots == 0
    assert core.dispatch(0.0) == []
    assert core.queue_depth() == 5


def test_a_result_from_a_prefetching_device_opens_one_place_for_the_next_task():
    core = make_core(prefetch=1)
    add_device(core, "d1", slots=1)
    submit(core, "t1", "t2", "t3")
    assert [a.task.id for a in assigns(core.dispatch(0.0))] == ["t1", "t2"]
    core.started("t1", 1, 0.1)
    core.done("t1", 1, "d1", 5.0, 0.2)
    assert [a.task.id for a in assigns(core.dispatch(0.2))] == ["t3"]


def test_roundrobin_fills_free_slots_before_any_prefetch_queue():
    core = make_core("roundrobin", prefetch=2)
    add_device(core, "a", slots=1)
    add_device(core, "b", slots=1)
    submit(core, "t1", "t2")
    assert sorted(a.device_id for a in assigns(core.dispatch(0.0))) == ["a", "b"]


def test_load_prefers_a_fast_devices_short_queue_to_a_slow_devices_long_one():
    core = make_core("load", prefetch=2)
    fast, _, _ = add_device(core, "fast", slots=1)
    slow, _, _ = add_device(core, "slow", slots=1)
    fast.tasks_done, fast.service_ms_total = 10, 50.0  # 5 ms a task
    slow.tasks_done, slow.service_ms_total = 10, 4000.0  # 400 ms a task
    submit(core, "t1", "t2")
    core.dispatch(0.0)  # one each: both slots busy, both queues empty
    submit(core, "t3")
    assert [a.device_id for a in assigns(core.dispatch(0.0))] == ["fast"]


def test_the_deadline_watch_does_not_keep_ended_attempts():
    # ended attempts leave their deadline behind until it falls due; the heap is swept of them
    # so that a busy master's memory stays flat
    core = make_core()
    add_device(core, "d1", slots=1)
    for i in range(5000):
        submit(core, f"t{i}", now=float(i))
        (assign,) = assigns(core.dispatch(float(i)))
        core.done(assign.task.id, assign.attempt, "d1", 1.0, float(i))
    assert len(core._deadlines) <= 2 * len(core.tasks) + 1024 + 1
    # a live attempt's deadline survives every sweep
    submit(core, "slow", now=5000.0)
    core.dispatch(5000.0)
    for i in range(3000):
        core._watch_deadline(new_task(f"x{i}"), 5000.0)  # ended attempts' leftovers
    assert any(entry[1] == "slow" for entry in core._deadlines)


def test_an_agents_own_drain_ends_when_it_leaves_and_an_operators_outlasts_a_rejoin():
    core = make_core()
    add_device(core, "own")
    add_device(core, "ops")
    core.self_drain("own", True)  # the agent drains to leave (SIGTERM, churn)
    core.drain("ops", True)  # an operator drains it, and the agent echoes it in heartbeats
    core.self_drain("ops", True)
    for device_id in ("own", "ops"):
        core.leave(device_id, 1.0)
    rejoined = {d: add_device(core, d, 2.0)[0] for d in ("own", "ops")}
    assert not rejoined["own"].draining and rejoined["own"].schedulable
    assert rejoined["ops"].draining and not rejoined["ops"].schedulable
    submit(core, "t1", now=2.0)
    assert placed(core.dispatch(2.0)) == [("t1", "own", 1)]


@pytest.mark.parametrize("how", ["running", "finished"])
def test_a_restarted_master_adopts_a_restored_task_the_rejoining_device_reports(how: str):
    # journaled queued at attempt 0; attempt 1 went out to d1 unjournaled, then the master
    # restarted: d1 rejoins with the task and keeps it, its result is accepted, nothing reruns
    core = make_core()
    task = Task(id="t1", task_type="layout", size_bytes=1, submitted_at=0.0)
    core.restore(task, 0.0)
    reports = {how: ["t1"]}
    _, reconciled, _ = add_device(core, "d1", 1.0, **reports)  # type: ignore[arg-type]
    assert reconciled.keep == ["t1"] and reconciled.drop == []
    assert task.state is TaskState.ASSIGNED and task.live == {1: "d1"}
    assert core.dispatch(1.0) == []  # not sent again
    assert accepted(core.done("t1", 1, "d1", 5.0, 2.0), "t1")


def test_a_task_sent_again_since_the_restart_keeps_the_rejoining_devices_attempt_too():
    # another master took over and d2 reconnected first: the restored task went out again. d1
    # comes back still running attempt 1: both run on, the first result wins (as a hedge)
    core = make_core()
    task = Task(id="t1", task_type="layout", size_bytes=1, submitted_at=0.0)
    core.restore(task, 0.0)
    add_device(core, "d2", 0.5)
    core.dispatch(0.5)  # attempt 2 on d2
    _, reconciled, commands = add_device(core, "d1", 1.0, running=["t1"])
    assert reconciled.keep == ["t1"] and reconciled.drop == []
    assert task.live == {1: "d1", 2: "d2"}
    assert any(isinstance(c, Persist) and c.task is task for c in commands), "both journaled"
    out = core.done("t1", 1, "d1", 5.0, 2.0)
    assert accepted(out, "t1")
    assert [(c.device_id, c.attempt) for c in out if isinstance(c, CancelAttempt)] == [("d2", 2)]
    # once only: a second device claiming it is not given it
    core2 = make_core()
    again = Task(id="t1", task_type="layout", size_bytes=1, submitted_at=0.0)
    core2.restore(again, 0.0)
    add_device(core2, "d2", 0.5)
    core2.dispatch(0.5)
    add_device(core2, "d1", 1.0, running=["t1"])
    _, late, _ = add_device(core2, "d3", 1.5, running=["t1"])
    assert late.drop == ["t1"] and again.live == {1: "d1", 2: "d2"}
