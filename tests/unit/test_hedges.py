"""Hedged attempts in the core, one rule at a time, with explicit times."""

from __future__ import annotations

import pytest

from edgesched.clock import FakeClock
from edgesched.config import load_settings
from edgesched.config.loading import CONFIG_FILE
from edgesched.core.commands import (
    Assign,
    CancelAttempt,
    Finished,
    Persist,
    accepted,
    reconciliation,
)
from edgesched.core.core import Core
from edgesched.core.state import Device, DeviceState, Metrics, Task, TaskState
from edgesched.errors import ConfigError
from edgesched.journal.base import TaskRow
from edgesched.master.rows import task_from_row, update_row
from tests.unit.test_scheduler import add_device, make_core, placed, submit


def running_on_d1(core: Core, *task_ids: str, now: float = 0.0) -> list[Task]:
    """d1 runs the tasks (one slot each), d2 (idle, one slot) could run them too."""
    add_device(core, "d1", now, slots=len(task_ids))
    tasks = submit(core, *task_ids, now=now)
    assert {d for _, d, _ in placed(core.dispatch(now))} == {"d1"}
    for task in tasks:
        core.started(task.id, 1, now, "d1")
    add_device(core, "d2", now)
    return tasks


def state(task: Task) -> TaskState:
    return task.state


def test_a_lost_link_hedges_the_running_attempt_on_another_device_at_once():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    assert core.link_lost("d1", 1.0) == []
    out = core.dispatch(1.0)
    assert placed(out) == [("t1", "d2", 2)]
    assert any(isinstance(c, Persist) for c in out), "a second live attempt is journaled"
    assert task.live == {1: "d1", 2: "d2"}, "the first attempt stays live"
    assert core.devices["d1"].state is DeviceState.SUSPECT, "membership is unchanged"
    assert task.hedges == 1 and core.hedges_started == 1
    assert core.hedges_in_flight() == 0, "a suspect device's hedge is not budgeted"


def test_missed_beats_hedge_at_the_tick_that_makes_the_device_suspect():
    core = make_core()
    running_on_d1(core, "t1")
    core.heartbeat("d2", Metrics(), 6.5)
    core.tick(6.5)  # 3 beats of 2 s missed: suspect
    assert core.devices["d1"].state is DeviceState.SUSPECT
    assert placed(core.dispatch(6.5)) == [("t1", "d2", 2)]


def test_the_hedge_wins_the_original_is_cancelled_and_its_late_result_discarded():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)
    out = core.done("t1", 2, "d2", 50.0, 1.5)
    assert accepted(out, "t1")
    assert [(c.device_id, c.attempt) for c in out if isinstance(c, CancelAttempt)] == [("d1", 1)]
    assert task.hedge_won and core.hedges_won == 1 and core.hedges_lost == 0
    assert task.wasted_ms == 1500.0, "the original ran from 0 to 1.5 s for nothing"
    assert core.hedge_wasted_ms == 1500.0
    assert core.done("t1", 1, "d1", 50.0, 2.0) == []  # the original's late result
    assert core.hedges_in_flight() == 0


def test_the_original_wins_when_its_device_comes_back_and_the_hedge_is_cancelled():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)
    core.register(
        Device(id="d1", device_type="cpu", slots=1, task_types=frozenset({"layout"})),
        ["t1"],
        [],
        2.0,
    )
    assert task.live == {1: "d1", 2: "d2"}, "back in time: both attempts are still live"
    out = core.done("t1", 1, "d1", 50.0, 2.5)
    assert accepted(out, "t1")
    assert [(c.device_id, c.attempt) for c in out if isinstance(c, CancelAttempt)] == [("d2", 2)]
    assert not task.hedge_won and core.hedges_lost == 1
    assert task.wasted_ms == 1500.0, "the hedge ran from 1 s to 2.5 s for nothing"
    assert core.done("t1", 2, "d2", 50.0, 3.0) == []


def test_a_dead_device_whose_task_has_a_live_hedge_queues_nothing_again():
    core = make_core(dead_grace_s=5.0)
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)
    core.heartbeat("d2", Metrics(), 6.0)
    out = core.tick(6.0)
    assert core.devices["d1"].state is DeviceState.DEAD
    assert task.live == {2: "d2"} and state(task) is TaskState.RUNNING
    assert placed(out + core.dispatch(6.0)) == [], "no duplicate attempt"
    assert accepted(core.done("t1", 2, "d2", 50.0, 6.5), "t1")


def test_with_hedging_off_a_suspect_devices_task_waits_for_the_grace():
    core = make_core(hedging=False, dead_grace_s=5.0)
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == []
    core.heartbeat("d2", Metrics(), 6.0)
    core.tick(6.0)
    assert placed(core.dispatch(6.0)) == [("t1", "d2", 2)]
    assert task.hedges == 0 and core.hedges_started == 0


def test_a_task_type_that_opts_out_is_never_hedged():
    core = make_core()
    core.set_unhedged(["layout"])
    running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == []


def test_a_zero_budget_means_no_hedge():
    core = make_core(hedge_budget=0.0)
    running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == []


def test_a_hedge_waits_for_an_able_device_and_never_goes_to_the_suspect_one():
    core = make_core()
    add_device(core, "d1", 0.0)
    submit(core, "t1")
    core.dispatch(0.0)
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == [], "no other device: the hedge waits"
    add_device(core, "d2", 2.0)
    assert placed(core.dispatch(2.0)) == [("t1", "d2", 2)]


def test_a_device_back_before_the_hedge_went_out_gets_no_hedge():
    core = make_core()
    add_device(core, "d1", 0.0)
    submit(core, "t1")
    core.dispatch(0.0)
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)  # nowhere to go yet
    core.register(
        Device(id="d1", device_type="cpu", slots=1, task_types=frozenset({"layout"})),
        ["t1"],
        [],
        1.5,
    )
    add_device(core, "d2", 2.0)
    assert placed(core.dispatch(2.0)) == []


def test_hedges_go_ahead_of_the_ready_queue():
    core = make_core()
    running_on_d1(core, "t1")
    submit(core, "t2", now=0.5)  # waits: d2 is the only opening left... for the hedge first
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == [("t1", "d2", 2)]


def test_a_hedge_that_takes_the_last_opening_is_still_sent_with_many_tasks_ready():
    core = make_core()
    running_on_d1(core, "t1")
    submit(core, *(f"q{i}" for i in range(6)), now=0.5)  # more than a few ready, no dispatch
    core.link_lost("d1", 1.0)
    assert placed(core.dispatch(1.0)) == [("t1", "d2", 2)]


def test_a_suspect_devices_attempts_are_all_hedged_at_once_whatever_the_budget():
    # the budget bounds straggler hedges: a lost board's attempts would run again after the
    # grace anyway, and a budget would only make the last of them wait (issue 17: ≤ 1 s)
    core = make_core(hedge_budget=0.1)
    tasks = running_on_d1(core, *(f"t{i}" for i in range(5)))
    for i in range(3, 12):  # ten schedulable one-slot devices besides d1: 0.1 × 10 = 1
        add_device(core, f"d{i}", 0.5)
    core.link_lost("d1", 1.0)
    assert len(placed(core.dispatch(1.0))) == 5
    assert sum(t.hedges for t in tasks) == 5 and core.hedge_limit() == 1
    assert core.hedges_in_flight() == 0, "none of them counts against the straggler budget"


def test_the_budget_bounds_the_straggler_hedges_out_at_once():
    core = make_core(hedge_budget=0.1)
    for _ in range(20):
        core.service_times.observe("layout", "cpu", 100.0)
    tasks = running_on_d1(core, *(f"t{i}" for i in range(5)))
    for i in range(3, 12):  # ten schedulable one-slot devices besides d1: 0.1 × 10 = 1 hedge
        add_device(core, f"d{i}", 0.0)
    for d in core.devices:
        core.heartbeat(d, Metrics(), 0.0)
    core.tick(0.5)  # every attempt on d1 is past 3 × 100 ms
    first = placed(core.dispatch(0.5))
    assert len(first) == 1 and core.hedge_limit() == 1 and core.hedges_in_flight() == 1
    core.tick(0.6)
    assert placed(core.dispatch(0.6)) == [], "the budget is spent"
    (task_id, device_id, attempt) = first[0]
    core.done(task_id, attempt, device_id, 10.0, 0.7)
    core.tick(0.8)
    assert len(placed(core.dispatch(0.8))) == 1, "a hedge ended: the next one goes"
    assert sum(t.hedges for t in tasks) == 2


def test_a_budget_above_zero_allows_at_least_one_hedge():
    core = make_core(hedge_budget=0.01)
    running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    assert len(placed(core.dispatch(1.0))) == 1


def straggling(core: Core) -> Task:
    """d1 runs t1 since 0 s; layout on cpu has been seen to take 100 ms; d2 is idle."""
    for _ in range(20):
        core.service_times.observe("layout", "cpu", 100.0)
    (task,) = running_on_d1(core, "t1")
    core.heartbeat("d1", Metrics(), 0.0)
    core.heartbeat("d2", Metrics(), 0.0)
    return task


def test_an_attempt_past_factor_times_its_p95_is_hedged_at_a_tick():
    core = make_core()  # factor 3: 3 × 100 ms + a transfer well under 1 ms
    task = straggling(core)
    core.tick(0.29)
    assert placed(core.dispatch(0.29)) == [], "within 3 × p95: left alone"
    core.tick(0.31)
    assert placed(core.dispatch(0.31)) == [("t1", "d2", 2)]
    assert core.devices["d1"].state is DeviceState.ONLINE
    assert task.live == {1: "d1", 2: "d2"}


def test_no_straggler_hedge_below_the_floor_or_with_factor_zero():
    core = make_core(hedge_floor_s=1.0)
    straggling(core)
    core.tick(0.9)
    assert placed(core.dispatch(0.9)) == []
    core.tick(1.01)
    assert len(placed(core.dispatch(1.01))) == 1
    off = make_core(hedge_straggler_factor=0.0)
    straggling(off)
    off.tick(50.0)
    assert placed(off.dispatch(50.0)) == []


def test_a_straggler_hedge_goes_only_where_it_is_expected_to_finish_sooner():
    core = make_core()
    for _ in range(20):
        core.service_times.observe("layout", "cpu", 100.0)
        core.service_times.observe("layout", "rk3588", 5000.0)
    running_on_d1(core, "t1")
    del core.devices["d2"]
    core._ordered = core._layout = None
    slow = Device(id="d3", device_type="rk3588", slots=1, task_types=frozenset({"layout"}))
    core.register(slow, [], [], 0.0)
    core.tick(0.5)  # past 3 × 100 ms, but d3 would take 5 s: no use
    assert placed(core.dispatch(0.5)) == []
    core.tick(5.9)  # 5.9 s in: a fresh 5 s attempt is sooner
    assert placed(core.dispatch(5.9)) == [("t1", "d3", 2)]


def test_a_hedged_task_is_not_hedged_again_while_both_attempts_are_out():
    core = make_core()
    task = straggling(core)
    add_device(core, "d3", 0.0)
    core.tick(0.5)
    assert len(placed(core.dispatch(0.5))) == 1
    core.tick(5.0)
    core.link_lost("d1", 5.0)
    assert placed(core.dispatch(5.0)) == []
    assert task.hedges == 1


def test_a_failed_hedge_leaves_the_original_running():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)
    out = core.failed("t1", 2, "d2", "inference_error", "boom", 1.5)
    assert not any(isinstance(c, (Finished, Assign)) for c in out)
    assert task.live == {1: "d1"} and task.failures == 0
    assert state(task) is TaskState.RUNNING


# ---- the journal's row, settings ------------------------------------------------------------


def test_a_hedged_tasks_row_keeps_both_live_attempts_and_a_restart_restores_both():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    core.link_lost("d1", 1.0)
    core.dispatch(1.0)
    clock = FakeClock()
    row = TaskRow("t1", "c", "k", "layout", "t1.png", "", 1000, 0)
    values = update_row(row, task, clock)
    assert values["timings"]["live"] == {"1": "d1", "2": "d2"}
    back = task_from_row(row, clock.monotonic(), clock)
    assert back.live == {1: "d1", 2: "d2"} and back.attempt == 2
    restored = make_core()
    restored.restore(back, 0.0)
    # the original's board rejoins first and reports it: kept, and its result is taken
    device = Device(id="d1", device_type="cpu", slots=1, task_types=frozenset({"layout"}))
    assert reconciliation(restored.register(device, ["t1"], [], 1.0)).keep == ["t1"]
    assert accepted(restored.done("t1", 1, "d1", 10.0, 1.5), "t1")
    # the task ended: its row forgets the live attempts and counts what hedging did
    core.done("t1", 1, "d1", 10.0, 2.0)
    row.timings = {}
    final = update_row(row, task, clock)
    assert "live" not in final["timings"]
    assert final["timings"]["hedges"] == 1 and final["timings"]["hedge_won"] is False
    assert final["timings"]["wasted_ms"] == 1000.0 and final["timings"]["attempts"] == 2


def test_a_single_attempt_rows_keep_no_live_list():
    core = make_core()
    (task,) = running_on_d1(core, "t1")
    row = TaskRow("t1", "c", "k", "layout", "t1.png", "", 1000, 0)
    assert "timings" not in update_row(row, task, FakeClock())


def test_hedging_settings_from_the_file_and_the_environment(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(
        "[scheduling]\nhedge_budget = 0.25\nhedge_straggler_factor = 0\n"
        "[tasktypes.gate]\nkind = 'raw'\nmodel = ''\nhedge = false\n",
        encoding="utf-8",
    )
    loaded = load_settings(tmp_path, env={"EDGESCHED_SCHEDULING_HEDGING": "false"})
    assert loaded.scheduling.hedging is False
    assert loaded.scheduling.hedge_budget == 0.25
    assert loaded.scheduling.hedge_straggler_factor == 0.0
    assert loaded.tasktypes["gate"].hedge is False and loaded.tasktypes["layout"].hedge
    defaults = load_settings(env={}).scheduling
    assert (defaults.hedging, defaults.hedge_budget, defaults.hedge_straggler_factor) == (
        True,
        0.1,
        3.0,
    )


def test_a_hedge_budget_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match=r"scheduling\.hedge_budget"):
        load_settings(env={"EDGESCHED_SCHEDULING_HEDGE_BUDGET": "1.5"})
    with pytest.raises(ConfigError, match=r"scheduling\.hedge_straggler_factor"):
        load_settings(env={"EDGESCHED_SCHEDULING_HEDGE_STRAGGLER_FACTOR": "-1"})
