"""Task and device state: legal transitions, slot arithmetic, reported-figure cleaning."""

from __future__ import annotations

import itertools
import math

import pytest

from edgesched.core.state import (
    FINAL_STATES,
    LEGAL_TRANSITIONS,
    AttemptError,
    Device,
    DeviceState,
    IllegalTransition,
    Task,
    TaskState,
    clean_fraction,
)

ALL_PAIRS = list(itertools.product(TaskState, TaskState))


def make_task(state: TaskState = TaskState.QUEUED) -> Task:
    return Task(id="t1", task_type="layout", size_bytes=10, submitted_at=0.0, state=state)


def make_device(slots: int = 2) -> Device:
    return Device(id="d1", device_type="cpu", slots=slots, task_types=frozenset({"layout"}))


def test_final_states_are_done_dead_and_cancelled():
    assert {s for s in TaskState if s.final} == {
        TaskState.DONE,
        TaskState.DEAD,
        TaskState.CANCELLED,
    }
    assert frozenset(s for s in TaskState if s.final) == FINAL_STATES


def test_task_states_serialise_as_their_lowercase_names():
    assert [s.value for s in TaskState] == [
        "queued",
        "assigned",
        "running",
        "done",
        "dead",
        "cancelled",
    ]
    assert TaskState("running") is TaskState.RUNNING


@pytest.mark.parametrize(("before", "after"), sorted(LEGAL_TRANSITIONS))
def test_a_legal_transition_changes_the_state(before, after):
    task = make_task(before)
    task.move(after)
    assert task.state is after


@pytest.mark.parametrize(("before", "after"), [p for p in ALL_PAIRS if p not in LEGAL_TRANSITIONS])
def test_an_illegal_transition_raises_and_leaves_the_state_alone(before, after):
    task = make_task(before)
    with pytest.raises(IllegalTransition, match=f"{before.value} → {after.value}"):
        task.move(after)
    assert task.state is before


def test_done_and_cancelled_tasks_can_never_move_again():
    for final in (TaskState.DONE, TaskState.CANCELLED):
        assert not any(before is final for before, _ in LEGAL_TRANSITIONS)


def test_only_an_operator_retry_leaves_dead():
    assert [after for before, after in LEGAL_TRANSITIONS if before is TaskState.DEAD] == [
        TaskState.QUEUED
    ]


def test_no_state_moves_to_itself():
    assert all(before is not after for before, after in LEGAL_TRANSITIONS)


def test_every_state_is_reachable_from_queued():
    reached = {TaskState.QUEUED}
    frontier = [TaskState.QUEUED]
    while frontier:
        here = frontier.pop()
        for before, after in LEGAL_TRANSITIONS:
            if before is here and after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(TaskState)


def test_an_illegal_transition_is_a_runtime_error():
    assert issubclass(IllegalTransition, RuntimeError)


def test_a_new_task_is_queued_with_no_attempt_and_nothing_live():
    task = make_task()
    assert task.state is TaskState.QUEUED
    assert task.attempt == 0
    assert task.failures == 0
    assert task.live == {}
    assert task.errors == []


def test_tasks_do_not_share_their_mutable_fields():
    a, b = make_task(), make_task()
    a.live[1] = "d1"
    a.errors.append(AttemptError(1, "d1", "backend", "boom", 1.0, True))
    assert b.live == {}
    assert b.errors == []


def test_an_attempt_error_turns_into_a_plain_dict():
    error = AttemptError(2, "d1", "backend", "boom", 3.5, True)
    assert error.to_dict() == {
        "attempt": 2,
        "device_id": "d1",
        "kind": "backend",
        "message": "boom",
        "at": 3.5,
        "counted": True,
    }


def test_free_slots_are_the_slots_minus_what_is_in_flight():
    device = make_device(slots=3)
    assert device.free_slots == 3
    device.inflight.add(("t1", 1))
    assert device.free_slots == 2
    device.inflight.update({("t2", 1), ("t3", 1)})
    assert device.free_slots == 0


def test_free_slots_never_go_below_zero():
    device = make_device(slots=1)
    device.inflight.update({("t1", 1), ("t2", 1), ("t3", 1)})
    assert device.free_slots == 0


def test_a_device_with_no_finished_task_has_a_mean_service_time_of_zero():
    assert make_device().mean_service_ms == 0.0


def test_the_mean_service_time_is_the_total_over_the_tasks_done():
    device = make_device()
    device.tasks_done = 4
    device.service_ms_total = 100.0
    assert device.mean_service_ms == pytest.approx(25.0)


def test_an_online_device_with_a_link_that_is_not_draining_is_schedulable():
    assert make_device().schedulable


@pytest.mark.parametrize("state", [DeviceState.SUSPECT, DeviceState.DEAD, DeviceState.LEFT])
def test_a_device_that_is_not_online_is_not_schedulable(state):
    device = make_device()
    device.state = state
    assert not device.schedulable


def test_a_device_without_its_link_is_not_schedulable():
    device = make_device()
    device.link_up = False
    assert not device.schedulable


def test_a_draining_device_is_not_schedulable():
    device = make_device()
    device.operator_drained = True
    assert device.draining and not device.schedulable
    device.operator_drained, device.self_draining = False, True
    assert device.draining and not device.schedulable


def test_a_stalled_device_is_not_schedulable():
    device = make_device()
    device.stalled = True
    assert not device.schedulable


def test_a_device_has_no_xpu_figure_and_no_measured_bandwidth_until_it_reports():
    metrics = make_device().metrics
    assert metrics.xpu < 0
    assert metrics.bandwidth_mbps == 0.0
    assert math.isnan(metrics.temperature_c)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0.0), (0.25, 0.25), (1.0, 1.0), (-0.5, 0.0), (1.7, 1.0), (100.0, 1.0)],
)
def test_clean_fraction_clamps_into_zero_to_one(value, expected):
    assert clean_fraction(value) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_clean_fraction_turns_non_finite_values_into_the_unknown_value(value):
    assert clean_fraction(value) == 0.0
    assert clean_fraction(value, unknown=0.5) == 0.5
