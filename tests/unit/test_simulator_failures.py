"""The simulator's failure models (a board killed, frozen, slowed for a window), the work it
counts as wasted, and ``bench straggler --simulate`` end to end. Hedging is set off where a
figure depends on it, so these hold before and after the hedging mechanism is merged."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgesched.agent.emulation import Profile, SubDeviceSpec
from edgesched.config import SchedulingSettings
from edgesched.tools.bench import hedging
from edgesched.tools.bench.cli import bench_command
from edgesched.tools.sim import Link, Scenario, SimDevice, SimTask, Simulation, simulate

FAST = Link(1e6, 1e6, rtt_ms=0.0)  #: a payload of a few bytes arrives at once


def fixed(ms: float, slots: int = 1) -> Profile:
    """A board whose every task takes ``ms`` (p95 = median: no spread)."""
    subs = tuple(SubDeviceSpec(f"s{i}", "npu", 1) for i in range(slots))
    return Profile("fixed", "test board", subs, ms, ms, ("onnx",), "test")


def tasks(n: int) -> tuple[SimTask, ...]:
    return tuple(SimTask(f"t{i:03d}", 10) for i in range(n))


def no_hedging(**values: float) -> SchedulingSettings:
    return hedging.settings_with(SchedulingSettings(**values), False)  # type: ignore[arg-type]


def failing(link_lost: bool) -> Scenario:
    devices = (
        SimDevice("d1", fixed(100.0), FAST),
        SimDevice("d2", fixed(100.0, slots=2), FAST, fails_at=0.35, link_lost=link_lost),
    )
    return Scenario(devices, tasks(30), settings=no_hedging(dead_grace_s=5.0, prefetch=0))


def test_a_killed_board_is_suspect_at_once_its_tasks_run_elsewhere_after_the_grace():
    result = simulate(failing(link_lost=True), "roundrobin")
    assert result.done == 30 and result.dead == 0
    assert result.expired == ["d2"]
    # its link broke at 0.35 s: suspect then, dead 5 s later, not after 3 missed beats
    assert 0.35 + 5.0 < result.makespan_s < 0.35 + 5.0 + 0.5


def test_a_frozen_board_is_found_out_by_its_silence():
    result = simulate(failing(link_lost=False), "roundrobin")
    assert result.done == 30 and result.expired == ["d2"]
    assert 6.0 + 5.0 < result.makespan_s < 6.0 + 5.0 + 0.5  # 3 beats of 2 s, then the grace


def test_the_link_loss_reaches_the_core_when_the_board_is_killed():
    sim = Simulation(failing(link_lost=True), "roundrobin")
    sim.run()
    assert sim.core.devices["d2"].link_up is False
    frozen = Simulation(failing(link_lost=False), "roundrobin")
    frozen.run()
    assert frozen.core.devices["d2"].link_up is True  # silent, its link still up


def test_work_lost_with_a_board_is_wasted():
    result = simulate(failing(link_lost=True), "roundrobin")
    # 30 tasks of 0.1 s were taken; the two d2 was running since 0.3 s died half way
    assert result.work_s == pytest.approx(3.0, abs=1e-3)
    assert result.wasted_s == pytest.approx(0.1, abs=1e-3)  # the payloads take a few µs
    assert result.assigns == 32
    assert len(result.latencies_s) == 30


def test_a_slowed_board_is_slow_only_in_its_window():
    board = SimDevice("d1", fixed(100.0), FAST, slow_factor=10.0, slow_from=0.0, slow_for=0.05)
    scenario = Scenario((board,), tasks(3), settings=no_hedging(prefetch=0))
    result = simulate(scenario, "roundrobin")
    # the first task starts in the window (1 s), the next two after it (0.1 s each)
    assert result.work_s == pytest.approx(1.2, abs=1e-3)
    assert result.wasted_s == 0.0
    assert 1.2 <= result.makespan_s < 1.3
    assert board.slow_at(0.0) == 10.0 and board.slow_at(0.05) == 1.0


def test_the_simulated_straggler_bench_prints_every_model_with_hedging_on_and_off():
    args = ["straggler", "--simulate", "--seeds", "1-2", "--duration", "10", "--json"]
    args += ["--slow-at", "3", "--slow-for", "3"]
    out = CliRunner().invoke(bench_command, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["simulated"] is True and result["seeds"] == [1, 2]
    assert set(result["models"]) == {"healthy", "slowed", "killed", "frozen"}
    for model in ("slowed", "killed", "frozen"):
        assert set(result["models"][model]) == {"off", "on"}
        for figures in result["models"][model].values():
            assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
            assert 0.0 <= figures["wasted_share"] < 1.0
    # a killed board's tasks wait for the grace without hedging: the slowest task shows it
    assert result["models"]["killed"]["off"]["max_ms"] > 30_000
    assert "p99_ratio_to_healthy" in result["comparison"]["slowed_hedging_off"]
