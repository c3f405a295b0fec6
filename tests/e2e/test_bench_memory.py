"""`edgesched bench memory` with tiny sizes: every figure is in its JSON, nothing is left running.

No assertion on speed or on the gates: those are for full runs on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchcli import bench_json, left_running, run_bench

pytestmark = [pytest.mark.e2e, pytest.mark.auth]


def test_memory_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        *("--inferences", "12", "--baseline-at", "4", "--checkpoint-every", "4"),
        *("--pictures", "2", "--page-width", "320"),
        *("--master-tasks", "300", "--master-sample-at", "100", "--master-sample-every", "100"),
        *("--master-agents", "1", "--agent-slots", "4", "--window", "100", "--streams", "2"),
        *("--idle-s", "1", "--settle-s", "0", "--timeout", "90"),
        *("--workdir", str(work), "--json"),
    ]
    result = bench_json("memory", *args, timeout=120)

    assert result["parts"] == ["agent", "master", "idle"]
    agent = result["agent"]
    assert agent["backend"] == "onnx"
    assert agent["load"]["done"] == 12
    assert [s["inferences"] for s in agent["samples"]] == [4, 8, 12]
    for key in ("rss_before_first_bytes", "rss_baseline_bytes", "rss_end_bytes", "rss_max_bytes"):
        assert agent[key] > 10_000_000, key
    for key in ("growth_bytes", "growth_mb", "slope_bytes_per_1000", "ms_per_inference"):
        assert isinstance(agent[key], (int, float)), key
    assert agent["baseline_at"] == 4
    assert isinstance(agent["gate"]["passed"], bool)
    assert agent["gate"]["limit_mb"] == 5

    master = result["master"]
    assert master["load"]["done"] == 300
    assert master["tasks"] == 300 and master["sample_at"] == 100
    assert [s["tasks"] for s in master["samples"]] == [100, 200, 300]
    for key in ("rss_start_bytes", "rss_at_sample_bytes", "rss_end_bytes"):
        assert master[key] > 10_000_000, key
    for key in ("change_fraction", "slope_bytes_per_10000", "master_cpu_us_per_task"):
        assert isinstance(master[key], (int, float)), key
    assert master["tasks_pending_after"] == 0
    assert master["upload_left"]["files"] == 0
    assert isinstance(master["gate"]["passed"], bool)

    idle = result["idle"]
    assert idle["seconds"] >= 1
    for proc in ("agent", "master"):
        assert idle[proc]["cpu_percent_of_core"] >= 0
        assert idle[proc]["rss_bytes"] > 10_000_000

    assert set(result["gates"]) == {"agent", "master"}
    assert "errors" not in result
    assert not left_running(work)


def test_memory_one_part_and_a_human_summary(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = ["--part", "idle", "--idle-s", "0.5", "--settle-s", "0", "--workdir", str(work)]
    done = run_bench("memory", *args, timeout=60)
    assert "idle (" in done.stdout and "% of a core" in done.stdout
    assert not left_running(work)
