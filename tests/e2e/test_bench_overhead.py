"""`edgesched bench overhead`, `payload` and `makespan --real` at tiny sizes: every figure is in
the JSON and every task came back. No assertion on speed (that is what the benchmarks are for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.benchcli import bench_json


def bench(scenario: str, *args: str, cwd: Path) -> dict[str, Any]:
    return bench_json(scenario, *args, "--json", cwd=cwd)


def test_overhead_smoke_measures_both_durabilities(tmp_path: Path) -> None:
    result = bench("overhead", "--tasks", "40", "--sequential", "10", "--rounds", "2", cwd=tmp_path)
    assert result["scenario"] == "overhead" and result["rounds"] == 2
    runs = result["durability"]
    assert isinstance(runs, dict) and set(runs) == {"normal", "full"}
    for run in runs.values():
        assert run["bulk"]["accepted"] == run["bulk"]["done"] == 40
        assert run["bulk"]["tasks_per_s"] > 0
        assert run["round_trip_ms"]["n"] == 10
        assert 0 < run["round_trip_ms"]["p50"] <= run["round_trip_ms"]["p99"]
        assert len(run["rounds"]) == 2
        for one in run["rounds"]:  # the plain hop ran in every round, beside edgesched
            assert one["reference"]["calls_per_s"] > 0
            assert one["reference"]["round_trip_ms"]["n"] == 10
        plain = run["reference"]
        assert plain["calls_per_s"] > 0 and 0 < plain["p50_ms"] <= plain["p99_ms"]
        expected = round(run["bulk"]["tasks_per_s"] / plain["calls_per_s"], 3)
        assert run["ratio"]["throughput"] == expected
        assert run["ratio"]["p50"] == round(run["round_trip_ms"]["p50"] / plain["p50_ms"], 3)
    assert result["reference"] == runs["normal"]["reference"]
    assert result["ratio"] == runs["normal"]["ratio"]
    fsync = result["fsync_ms"]
    assert isinstance(fsync, dict) and fsync["n"] == 200
    assert set(result["targets"]["met"]) == {
        "tasks_per_s",
        "round_trip_p50_ms",
        "throughput_ratio",
        "p50_ratio",
    }


def test_payload_smoke_reports_the_efficiency(tmp_path: Path) -> None:
    result = bench(
        "payload", "--tasks", "30", "--size", "20000", "--busy-ms", "2", "--rounds", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result["scenario"] == "payload" and result["rounds"] == 2
    bulk = result["bulk"]
    assert isinstance(bulk, dict) and bulk["done"] == 30
    work = result["work_ms_median"]
    assert isinstance(work, float) and work >= 2.0  # the busy backend burns at least that much
    assert isinstance(result["efficiency"], float) and result["efficiency"] > 0
    plain = result["reference"]  # two servers doing the same work per call
    assert plain["calls_per_s"] > 0 and plain["work_ms_median"] >= 2.0
    assert plain["efficiency"] > 0
    assert result["ratio"]["efficiency"] == round(result["efficiency"] / plain["efficiency"], 3)
    assert len(result["rounds_figures"]) == 2


def test_makespan_with_a_real_run_compares_it_with_the_simulator(tmp_path: Path) -> None:
    result = bench(
        "makespan", "--tasks", "30", "--seeds", "1", "--no-plot", "--real", "12",
        "--time-scale", "2", cwd=tmp_path,
    )  # fmt: skip
    real = result["real_vs_simulated"]
    assert isinstance(real, dict) and real["tasks"] == 12
    assert set(real["strategies"]) == {"roundrobin", "load", "ect"}
    for r in real["strategies"].values():
        assert r["real_done"] == 12
        assert sum(r["simulated_tasks_per_board_type"].values()) == 12
        assert r["real_makespan_s"] > 0 and r["simulated_makespan_s"] > 0
    assert "simulator_agrees_within_10_percent" in result["gates"]


def test_overhead_on_a_postgresql_journal_runs_sqlite_beside(tmp_path: Path, pg_dsn: str) -> None:
    """`--journal URL`: the master processes run on that database; every task came back."""
    result = bench(
        "overhead", "--tasks", "40", "--sequential", "10", "--rounds", "1", "--normal-only",
        "--journal", pg_dsn, cwd=tmp_path,
    )  # fmt: skip
    runs = result["durability"]
    assert set(runs) == {"normal", "postgresql"}
    for run in runs.values():
        assert run["bulk"]["accepted"] == run["bulk"]["done"] == 40
    assert result["ratio"] == runs["postgresql"]["ratio"]
    assert result["journal"].startswith("postgresql://")
    assert isinstance(result["targets"]["postgresql_met"], bool)
