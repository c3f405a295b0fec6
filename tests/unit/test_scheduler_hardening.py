"""The core against agents that restart after a drain, hold tasks without reporting, time out,
claim absurd slots, or stay dead (issue 14, findings 4, 7 and 9)."""

from __future__ import annotations

from edgesched.core.commands import CancelAttempt, Forgotten
from edgesched.core.state import DeviceState, Metrics, TaskState, bound_slots
from tests.unit.test_scheduler import add_device, make_core, placed, submit


def test_an_agent_that_drained_itself_then_rejoins_takes_tasks_again():
    # systemctl restart: SIGTERM (the agent reports draining, then says goodbye), then a start
    core = make_core()
    add_device(core, "d1", 1.0)
    assert core.self_drain("d1", True) == []
    assert core.devices["d1"].self_draining
    core.leave("d1", 2.0)
    device, _, _ = add_device(core, "d1", 3.0)
    assert not device.draining and device.schedulable
    submit(core, "t1", now=3.0)
    assert placed(core.dispatch(3.0)) == [("t1", "d1", 1)]


def test_a_link_that_breaks_while_the_agent_drains_itself_also_rejoins_undrained():
    core = make_core()
    add_device(core, "d1", 1.0)
    core.self_drain("d1", True)
    core.link_lost("d1", 2.0)
    device, _, _ = add_device(core, "d1", 3.0)
    assert device.schedulable


def test_an_operators_drain_outlives_the_agents_rejoin_and_its_own_reports():
    core = make_core()
    add_device(core, "d1", 1.0)
    core.drain("d1", True)
    core.leave("d1", 2.0)
    device, _, _ = add_device(core, "d1", 3.0)
    assert device.draining and device.operator_drained
    core.self_drain("d1", False)  # the fresh agent beats "not draining": the operator decides
    submit(core, "t1", now=3.0)
    assert core.dispatch(3.0) == []
    core.drain("d1", False)
    assert placed(core.dispatch(4.0)) == [("t1", "d1", 1)]


def test_an_operators_undrain_also_lifts_the_agents_report_of_that_drain():
    core = make_core()
    device, _, _ = add_device(core, "d1", 1.0)
    core.drain("d1", True)
    core.self_drain("d1", True)  # the agent was told, and reports it until told otherwise
    core.drain("d1", False)
    assert not device.draining


def test_a_self_drain_report_sets_the_flag_and_asks_for_nothing():
    core = make_core()
    add_device(core, "d1", 1.0)
    assert core.self_drain("d1", False) == []
    assert not core.devices["d1"].self_draining
    assert core.self_drain("d1", True) == []
    assert core.devices["d1"].self_draining
    assert core.self_drain("d1", True) == []
    assert core.self_drain("ghost", True) == []
    assert "ghost" not in core.devices


# ---- a device that holds tasks and never reports -------------------------------------------


def test_a_device_that_beats_but_never_starts_its_tasks_is_stalled_and_they_run_elsewhere():
    core = make_core(stall_after_s=30.0)
    liar, _, _ = add_device(core, "liar", 0.0, slots=100)
    submit(core, *[f"t{i}" for i in range(5)])
    assert {d for _, d, _ in placed(core.dispatch(0.0))} == {"liar"}
    for second in range(1, 30):
        core.heartbeat("liar", Metrics(), float(second))  # alive, but silent about its tasks
        assert core.tick(float(second)) == []
    add_device(core, "honest", 29.0, slots=5)
    core.heartbeat("liar", Metrics(), 30.0)
    out = core.tick(30.0)
    assert liar.stalled and not liar.schedulable and liar.shown_state == "stalled"
    assert sorted(c.task_id for c in out if isinstance(c, CancelAttempt)) == [
        f"t{i}" for i in range(5)
    ]
    assert all(core.tasks[f"t{i}"].state is TaskState.QUEUED for i in range(5))
    assert core.tasks["t0"].errors[-1].kind == "stalled"
    assert not core.tasks["t0"].errors[-1].counted
    assert {d for _, d, _ in placed(core.dispatch(30.0))} == {"honest"}
    core.heartbeat("liar", Metrics(), 31.0)  # a beat alone does not lift the suspicion
    assert liar.stalled


def test_a_stalled_device_that_reports_progress_takes_tasks_again():
    core = make_core(stall_after_s=10.0)
    liar, _, _ = add_device(core, "liar", 0.0, slots=2)
    submit(core, "t1")
    core.dispatch(0.0)
    core.heartbeat("liar", Metrics(), 10.0)
    core.tick(10.0)
    assert liar.stalled
    core.started("t1", 1, 11.0, "liar")  # late, for an attempt already moved: still progress
    assert not liar.stalled and liar.schedulable


def test_a_device_that_reports_its_starts_is_not_stalled_by_long_tasks():
    core = make_core(stall_after_s=10.0, task_deadline_s=1000.0)
    device, _, _ = add_device(core, "d1", 0.0, slots=1)
    submit(core, "t1")
    core.dispatch(0.0)
    core.started("t1", 1, 1.0, "d1")
    for second in range(2, 100):
        core.heartbeat("d1", Metrics(), float(second))
        core.tick(float(second))
    assert not device.stalled
    assert core.tasks["t1"].state is TaskState.RUNNING


def test_the_stall_watch_counts_from_the_last_report_not_from_the_oldest_assignment():
    # a slow uplink: payloads arrive one after another, each start resets the watch
    core = make_core(stall_after_s=10.0, prefetch=3)
    device, _, _ = add_device(core, "d1", 0.0, slots=1)
    submit(core, "t1", "t2", "t3", "t4")
    assert len(placed(core.dispatch(0.0))) == 4
    for n, second in enumerate((8.0, 16.0, 24.0), start=1):
        core.started(f"t{n}", 1, second, "d1")
        core.heartbeat("d1", Metrics(), second)
        core.tick(second + 9.0)
    assert not device.stalled


def test_stalling_is_off_with_zero():
    core = make_core(stall_after_s=0.0)
    device, _, _ = add_device(core, "d1", 0.0)
    submit(core, "t1")
    core.dispatch(0.0)
    core.heartbeat("d1", Metrics(), 1e6)
    core.tick(1e6)
    assert not device.stalled


# ---- a timed-out attempt goes elsewhere -----------------------------------------------------


def test_an_attempt_past_its_deadline_is_not_sent_to_the_same_device_again():
    core = make_core(task_deadline_s=10.0, stall_after_s=0.0)
    add_device(core, "hung", 0.0, slots=100)
    submit(core, "t1")
    assert placed(core.dispatch(0.0)) == [("t1", "hung", 1)]
    add_device(core, "busy", 5.0, slots=1, task_types=("layout", "other"))
    submit(core, "t0", now=5.0, task_type="other")
    assert placed(core.dispatch(5.0)) == [("t0", "busy", 1)]
    core.started("t0", 1, 5.5, "busy")
    for second in range(1, 11):
        core.heartbeat("hung", Metrics(), float(second))
        core.heartbeat("busy", Metrics(), float(second))
    core.tick(10.0)
    assert core.tasks["t1"].state is TaskState.QUEUED
    # the hung device has 100 free slots, but the task waits for the other able device
    assert core.dispatch(10.0) == []
    core.done("t0", 1, "busy", 1.0, 11.0)
    assert placed(core.dispatch(11.0)) == [("t1", "busy", 2)]


def test_an_attempt_past_its_deadline_goes_back_to_the_only_able_device():
    core = make_core(task_deadline_s=10.0, stall_after_s=0.0)
    add_device(core, "only", 0.0, slots=2)
    submit(core, "t1")
    core.dispatch(0.0)
    core.heartbeat("only", Metrics(), 10.0)
    core.tick(10.0)
    assert placed(core.dispatch(10.0)) == [("t1", "only", 2)]


# ---- slots bounded by the board's type ------------------------------------------------------


def test_slots_are_bounded_by_what_the_boards_type_can_have():
    assert bound_slots(100_000, "rk3588", cpu_count=8, cpu_slots_per_core=4, max_slots=64) == 6
    assert bound_slots(3, "rk3588", cpu_count=8, cpu_slots_per_core=4, max_slots=64) == 3
    assert bound_slots(100_000, "atlas310", cpu_count=4, cpu_slots_per_core=4, max_slots=64) == 8
    assert bound_slots(100_000, "orin", cpu_count=12, cpu_slots_per_core=4, max_slots=64) == 8
    assert bound_slots(100_000, "cpu", cpu_count=4, cpu_slots_per_core=4, max_slots=64) == 16
    assert bound_slots(100_000, "cpu", cpu_count=64, cpu_slots_per_core=4, max_slots=64) == 64
    # a CPU count not reported: the global bound alone
    assert bound_slots(100_000, "cpu", cpu_count=0, cpu_slots_per_core=4, max_slots=32) == 32
    # an unknown type is bounded like a CPU
    assert bound_slots(500, "toaster", cpu_count=2, cpu_slots_per_core=4, max_slots=64) == 8
    assert bound_slots(0, "cpu", cpu_count=2, cpu_slots_per_core=4, max_slots=64) == 1
    assert bound_slots(-5, "cpu", cpu_count=2, cpu_slots_per_core=4, max_slots=64) == 1


# ---- forgetting devices long dead -----------------------------------------------------------


def test_a_device_gone_for_longer_than_the_setting_is_forgotten():
    core = make_core(heartbeat_interval_s=1.0, suspect_after_beats=1, dead_grace_s=5.0)
    add_device(core, "left", 0.0)
    add_device(core, "silent", 0.0)
    add_device(core, "alive", 0.0)
    core.leave("left", 10.0)
    for second in range(1, 30):
        core.heartbeat("alive", Metrics(), float(second))
        core.tick(float(second))
    assert core.devices["silent"].state is DeviceState.DEAD  # dead since t=6
    assert core.forget(29.0, 100.0) == []
    assert sorted(core.forget(110.0, 100.0), key=str) == [Forgotten("left"), Forgotten("silent")]
    assert sorted(core.devices) == ["alive"]
    add_device(core, "left", 120.0)  # it may come back, as a new device
    assert core.devices["left"].schedulable


def test_a_device_that_left_with_a_task_is_forgotten_its_task_queued_elsewhere():
    core = make_core()
    add_device(core, "d1", 0.0)
    submit(core, "t1")
    core.dispatch(0.0)
    core.leave("d1", 1.0)  # its attempt went back to the queue
    assert core.forget(1000.0, 10.0) == [Forgotten("d1")]
    assert core.tasks["t1"].state is TaskState.QUEUED


def test_a_task_cancelled_before_its_payload_left_does_not_stall_its_device():
    # the master drops a queued payload when its task is cancelled: the agent never hears of
    # it, so never reports it; that silence is not the device's
    core = make_core(stall_after_s=10.0)
    device, _, _ = add_device(core, "d1", 0.0, slots=2)
    submit(core, "t1")
    core.dispatch(0.0)
    core.cancel("t1", 1.0)
    core.heartbeat("d1", Metrics(), 20.0)
    core.tick(20.0)
    assert not device.stalled and device.schedulable


def test_an_attempt_judged_by_its_deadline_is_not_judged_again_by_the_stall_watch():
    core = make_core(stall_after_s=30.0, task_deadline_s=10.0)
    device, _, _ = add_device(core, "d1", 0.0, slots=2)
    submit(core, "t1")
    core.dispatch(0.0)
    core.heartbeat("d1", Metrics(), 10.0)
    core.tick(10.0)  # deadline: t1 queued again, and (the only device) sent back to it
    assert placed(core.dispatch(10.0)) == [("t1", "d1", 2)]
    core.started("t1", 2, 11.0, "d1")
    core.heartbeat("d1", Metrics(), 40.0)
    core.tick(40.0)
    assert not device.stalled
