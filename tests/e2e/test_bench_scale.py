"""`edgesched bench scale` at a tiny size: every figure is in its JSON, every agent joined (and
rejoined with its credential), nothing is left running. No assertion on speed."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.benchcli import bench_json

pytestmark = [pytest.mark.e2e]


def test_scale_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        *("--agents", "20", "--processes", "2", "--seconds", "3", "--settle", "1"),
        *("--decision-devices", "20", "--decision-samples", "100", "--task-seconds", "2"),
        *("--workdir", str(work), "--json"),
    ]
    result = bench_json("scale", *args, timeout=90)

    assert result["agents"] == 20 and result["processes"] == 2
    assert result["agents_joined"] == 20 and result["devices_online"] == 20
    assert result["credential_rejoins"] == {"tried": 2, "ok": 2}
    for key in (
        "master_cpu_percent",
        "master_rss_mib",
        "heartbeat_handling_p99_ms",
        "decision_p99_ms",
        "heartbeat_bytes_per_s_per_agent",
    ):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["targets"] == {"master_cpu_percent_max": 25.0, "decision_p99_ms_max": 1.0}
    assert set(result["gates"]) == {
        "all_agents_joined",
        "credential_rejoin",
        "master_cpu",
        "decision_p99",
    }
    assert result["gates"]["all_agents_joined"] and result["gates"]["credential_rejoin"]
    assert result["ok"] == all(result["gates"].values())

    beats = result["heartbeats"]
    assert beats["handled_in_window"] > 0 and beats["acks_per_s"] > 0
    assert beats["link_errors"] == beats["refusals"] == 0
    assert result["bytes"]["heartbeat_message"] > 0 and result["bytes"]["ack_message"] > 0
    decisions = result["decisions"]
    assert set(decisions["strategies"]) == {"roundrobin", "load", "ect"}
    for figures in decisions["strategies"].values():
        for mode in ("burst", "arrival"):
            assert figures[mode]["decisions"] > 0
            assert isinstance(figures[mode]["p99_ms"], float)

    flow = result["tasks_under_load"]  # noop tasks, answered by the simulated agents
    assert flow["done"] == flow["tasks"] > 0 and not flow["errors"]
    assert flow["answered_by_agents"] >= flow["done"]
    assert flow["tasks_per_s"] > 0 and flow["master_cpu_percent"] > 0
    assert flow["heartbeats_handled"] > 0
    assert isinstance(flow["heartbeat_handling_p99_ms"], float)
    assert set(flow["met"]) == {"tasks_per_s", "heartbeat_handling_p99_ms"}

    pids = [result["master"]["pid"], *result["load_generator"]["worker_pids"]]
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive
