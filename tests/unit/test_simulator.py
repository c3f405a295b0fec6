"""The simulator: exact on hand-made cases, deterministic, and the makespan benchmark end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesched.agent.emulation import PROFILES, Profile, SubDeviceSpec
from edgesched.agent.pacing import BandwidthTrace
from edgesched.config import SchedulingSettings
from edgesched.core.strategies import STRATEGIES
from edgesched.tools.bench.cli import bench_command
from edgesched.tools.bench.makespan import run_makespan, workload
from edgesched.tools.sim import (
    Link,
    Scenario,
    SimDevice,
    SimTask,
    Simulation,
    lower_bound,
    simulate,
)
from edgesched.tools.sim.model import transfer_end

#: 8 Mbit/s moves 1 MB per second: 100 kB take 0.1 s exactly
ONE_MB_PER_S = Link(8.0, 8.0, rtt_ms=0.0)
FAST = Link(1e6, 1e6, rtt_ms=0.0)  #: a payload of a few bytes arrives at once


def fixed(ms: float, slots: int = 1, name: str = "fixed") -> Profile:
    """A board whose every task takes ``ms`` (p95 = median: the lognormal has no spread)."""
    subs = tuple(SubDeviceSpec(f"s{i}", "npu", 1) for i in range(slots))
    return Profile(name, "test board", subs, ms, ms, ("onnx",), "test")


def tasks(n: int, size: int = 100_000) -> tuple[SimTask, ...]:
    return tuple(SimTask(f"t{i:03d}", size) for i in range(n))


def heterogeneous(n: int = 200, seed: int = 7) -> Scenario:
    devices = (
        SimDevice("atlas", PROFILES["atlas310"], Link(50, 500)),
        SimDevice("orin", PROFILES["orin"], Link(50, 500)),
        SimDevice("rk", PROFILES["rk3588"], Link(10, 40, rtt_ms=20)),
    )
    return Scenario(devices, tasks(n, 150_000), seed=seed)


# ---- exact cases --------------------------------------------------------------------------------


def test_one_board_one_slot_fixed_times_gives_the_exact_makespan():
    # without prefetch each task holds the slot for its transfer (0.1 s) and its service
    # (0.1 s): no overlap
    scenario = Scenario(
        (SimDevice("d1", fixed(100.0), ONE_MB_PER_S),),
        tasks(5),
        master_mbps=1e9,
        settings=SchedulingSettings(prefetch=0),
    )
    result = simulate(scenario, "roundrobin")
    assert result.makespan_s == pytest.approx(1.0, abs=1e-9)
    assert result.done == 5
    assert result.tasks_per_device == {"d1": 5}
    # task k is submitted at 0 and ends at 0.2·k
    assert result.mean_latency_s == pytest.approx(0.2 * (1 + 2 + 3 + 4 + 5) / 5, abs=1e-9)
    assert result.device_stats["d1"]["service_s"] == pytest.approx(0.5)
    assert result.device_stats["d1"]["held_s"] == pytest.approx(1.0)


def test_with_prefetch_the_next_transfer_overlaps_the_running_task():
    scenario = Scenario(
        (SimDevice("d1", fixed(100.0), ONE_MB_PER_S),),
        tasks(5),
        master_mbps=1e9,
        settings=SchedulingSettings(prefetch=1),
    )
    result = simulate(scenario, "roundrobin")
    # the first transfer (0.1 s), then five services back to back, each next payload already
    # there: the link is never the bottleneck
    assert result.makespan_s == pytest.approx(0.6, abs=1e-9)
    assert result.device_stats["d1"]["service_s"] == pytest.approx(0.5)


def test_slots_are_respected():
    class Watched(Simulation):
        peak = 0

        def _received(self, board, key, task, arrived):
            super()._received(board, key, task, arrived)
            Watched.peak = max(Watched.peak, sum(board.attempts.values()))

    scenario = Scenario((SimDevice("d1", fixed(100.0, slots=3), FAST),), tasks(9, size=10))
    result = Watched(scenario, "load").run()
    assert Watched.peak == 3
    assert result.makespan_s == pytest.approx(0.3, abs=1e-6)  # three rounds of three


def test_a_transfer_follows_the_trace_across_steps():
    trace = BandwidthTrace(0, step_s=1.0)
    trace.values = [8.0, 16.0] * 128  # 1 MB/s, then 2 MB/s, ...
    # from 0.5 s: 0.5 MB by 1.0 s, the remaining 1 MB at 2 MB/s by 1.5 s
    assert transfer_end(trace, 0.5, 1_500_000) == pytest.approx(1.5)
    assert transfer_end(trace, 1.0, 1_000_000) == pytest.approx(1.5)  # starts on a boundary


def test_the_lower_bound_on_a_hand_made_case():
    devices = (
        SimDevice("a", fixed(100.0), Link(8.0, 8.0, rtt_ms=10.0)),  # 10 work units per s
        SimDevice("b", fixed(50.0, slots=2), Link(4.0, 16.0)),  # 40 work units per s
    )
    work = (*tasks(9), SimTask("big", 1_000_000, work=11.0))  # Σ work = 20
    bound = lower_bound(Scenario(devices, work, master_mbps=100.0))
    assert bound.compute_s == pytest.approx(20 / 50)
    # the big task: on a, 10 ms + 1 s at 8 Mbit/s + 1.1 s; on b, 2 ms + 0.5 s at 16 + 0.55 s
    assert bound.single_task_s == pytest.approx(0.002 + 0.5 + 0.55)
    assert bound.master_link_s == pytest.approx((9 * 100_000 + 1_000_000) * 8 / 100e6)
    assert bound.value_s == pytest.approx(1.052)


# ---- behaviour ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_same_seed_gives_the_same_result(strategy: str):
    first, second = simulate(heterogeneous(), strategy), simulate(heterogeneous(), strategy)
    assert first == second
    assert first.done == 200


def test_another_seed_gives_another_run():
    assert simulate(heterogeneous(seed=1), "load") != simulate(heterogeneous(seed=2), "load")


def test_a_device_dying_mid_run_still_ends_every_task():
    # without hedges: its tasks wait for the grace (the hedged run is the next test)
    settings = SchedulingSettings(dead_grace_s=5.0, prefetch=0, hedging=False)
    devices = (
        SimDevice("d1", fixed(100.0), FAST),
        SimDevice("d2", fixed(100.0, slots=2), FAST, fails_at=0.35),
    )
    scenario = Scenario(devices, tasks(30, size=10), settings=settings)
    result = simulate(scenario, "roundrobin")
    assert result.done == 30
    assert result.dead == 0
    assert result.expired == ["d2"]  # the core's own tick declared it dead...
    assert result.retries == 2  # ...and queued again the two tasks it was running
    # its last beat was at 0 s (the next was due at about 2 s); silent for 3 beats of 2 s makes
    # it suspect, 5 s of grace more dead: only then do the lost tasks run elsewhere
    assert 6.0 + 5.0 < result.makespan_s < 6.0 + 5.0 + 0.5
    assert result.tasks_per_device["d2"] == 6  # three rounds of two before it died


def test_with_hedging_a_dying_devices_tasks_run_elsewhere_long_before_the_grace():
    settings = SchedulingSettings(dead_grace_s=5.0, prefetch=0)
    devices = (
        SimDevice("d1", fixed(100.0), FAST),
        SimDevice("d2", fixed(100.0, slots=2), FAST, fails_at=0.35),
    )
    scenario = Scenario(devices, tasks(30, size=10), settings=settings)
    result = simulate(scenario, "roundrobin")
    assert result.done == 30 and result.dead == 0
    # its two running tasks straggled past 3 × their 100 ms: hedged on d1 (one at a time, the
    # budget of a 3-slot cluster), every task done before the board was even suspect
    assert result.expired == [] and result.retries == 0
    assert result.makespan_s < 6.0
    assert result.tasks_per_device["d2"] == 6


def test_a_missed_deadline_cancels_the_attempt_and_frees_the_slot():
    settings = SchedulingSettings(task_deadline_s=0.5, hedging=False)  # the deadline alone
    devices = (
        SimDevice("fast", fixed(10.0), FAST),
        SimDevice("slow", fixed(2000.0), Link(1e6, 1e6, rtt_ms=10.0)),
    )
    sim = Simulation(Scenario(devices, tasks(20, size=10), settings=settings), "roundrobin")
    result = sim.run()
    assert result.done == 20
    assert result.tasks_per_device == {"fast": 20, "slow": 0}
    assert result.retries >= 1
    assert not sim.core.devices["slow"].inflight  # its cancel report gave the slot back


# ---- the makespan benchmark ---------------------------------------------------------------------


def test_a_small_makespan_run_reports_every_strategy(tmp_path: Path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "makespan.png"
    result = run_makespan(tasks=60, seeds=[1, 2], plot_path=plot)
    assert result["scenario"] == "makespan"
    assert result["tasks"] == 60
    wanted = [n for n in ("roundrobin", "load", "ect") if n in STRATEGIES]
    assert set(result["workloads"]) == {"burst", "stream"}
    for kind, runs_of in result["workloads"].items():
        assert list(runs_of["median"]) == wanted
        assert [r["seed"] for r in runs_of["runs"]] == [1, 2]
        for run in runs_of["runs"]:
            lb = run["lower_bound_s"]
            assert list(run["strategies"]) == wanted
            for name, r in run["strategies"].items():
                assert r["done"] == 60, (kind, name)
                assert sum(r["tasks_per_device"].values()) == 60
                assert r["ratio_to_lb"] == pytest.approx(r["makespan_s"] / lb, rel=1e-3)
                # the bound is on expected times: a run is never far below it
                assert r["ratio_to_lb"] > 0.9
    assert plot.read_bytes().startswith(b"\x89PNG")
    json.dumps(result)  # JSON-able as it is


def test_the_stream_workload_arrives_over_time_and_the_burst_at_once():
    burst, stream = workload(50, 1, "burst"), workload(50, 1, "stream")
    assert {t.at for t in burst} == {0.0}
    assert [t.size_bytes for t in burst] == [t.size_bytes for t in stream]  # same payloads
    arrivals = [t.at for t in stream]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0 and arrivals[-1] > 0


def test_the_makespan_run_is_deterministic():
    first, second = run_makespan(tasks=40, seeds=[3]), run_makespan(tasks=40, seeds=[3])
    for volatile in ("runtime_s", "machine"):
        first.pop(volatile), second.pop(volatile)
    assert first == second


def test_the_bench_command_prints_one_json_object():
    result = CliRunner().invoke(
        bench_command, ["makespan", "--tasks", "30", "--seeds", "1-2", "--json", "--no-plot"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tasks"] == 30
    assert "plot" not in data
    assert set(data["gates"]) == {"ect_within_1_10_lb", "load_below_roundrobin"}
