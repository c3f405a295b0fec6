"""`edgesched bench failover` with a short grace: every figure is in its JSON, nothing is left
running. No assertion on how fast the failover is. The runs with hedging off keep the figures
of a plain failover (A's attempt given up, requeued, run on B) before and after hedging exists;
a run with hedging on is checked for what holds either way (its tasks run on B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchcli import bench_json, left_running

pytestmark = [pytest.mark.e2e, pytest.mark.auth]


def test_failover_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        *("--signal", "kill", "--hedging", "off"),
        *("--grace-s", "1", "--heartbeat-s", "0.5", "--time-scale", "50"),
        *("--timeout", "60", "--workdir", str(work), "--json"),
    ]
    whole = bench_json("failover", *args, timeout=90)
    assert len(whole["runs"]) == 1 and len(whole["table"]) == 1
    assert whole["targets_s"] == {"SIGKILL": 1.0, "SIGSTOP": 7.0}
    result = whole["runs"][0]
    assert result["signal"] == "SIGKILL" and result["hedging_requested"] == "off"
    assert result["hedging"] == "off"
    assert whole["table"][0]["max_running_elsewhere_s"] == result["max_running_s"]

    settings = result["settings"]
    assert settings["dead_grace_s"] == 1.0
    assert settings["heartbeat_interval_s"] == 0.5
    assert settings["suspect_after_beats"] == 3
    assert settings["environment"]["EDGESCHED_SCHEDULING_DEAD_GRACE_S"] == "1.0"
    assert result["device_a"] != result["device_b"]
    assert result["slots_a"] == 3 and result["tasks_submitted"] == 3
    assert result["tasks_on_a"] >= 1
    assert result["tasks_moved"] == result["tasks_on_a"] == len(result["tasks"])
    for task in result["tasks"]:
        assert task["attempt_on_b"] > task["attempt_on_a"]
        for key in ("assigned_s", "running_s", "requeued_s"):
            assert isinstance(task[key], float), key
    for key in ("max_assigned_s", "max_running_s", "max_requeued_s", "expected_s"):
        assert isinstance(result[key], float), key
    assert "dead" in result["a_state_first_seen_s"]
    assert isinstance(result["done_on_b"], int)
    assert isinstance(result["all_done_s"], float)
    assert not left_running(work)


def test_failover_of_a_frozen_agent(tmp_path: Path) -> None:
    """SIGSTOP keeps A's link open: the master must notice the silence; A is killed at the end."""
    work = tmp_path / "work"
    args = [
        *("--signal", "stop", "--hedging", "off"),
        *("--grace-s", "1", "--heartbeat-s", "0.3", "--tasks", "1"),
        *("--time-scale", "50", "--no-wait-done", "--timeout", "60"),
        *("--workdir", str(work), "--json"),
    ]
    result = bench_json("failover", *args, timeout=90)["runs"][0]
    assert result["signal"] == "SIGSTOP"
    assert result["settings"]["silent_before_suspect_s"] == pytest.approx(0.9)
    assert result["expected_s"] == pytest.approx(1.9)
    assert result["tasks_submitted"] == 1 and result["tasks_moved"] == 1
    assert isinstance(result["max_running_s"], float)
    assert result["done_on_b"] is None and result["all_done_s"] is None
    assert not left_running(work)


def test_failover_both_signals_with_hedging_on_and_off(tmp_path: Path) -> None:
    """The default: every signal with hedging off and on, side by side, each on its own cluster."""
    work = tmp_path / "work"
    args = [
        *("--grace-s", "1", "--heartbeat-s", "0.3", "--tasks", "1", "--time-scale", "50"),
        *("--timeout", "150", "--workdir", str(work), "--json"),
    ]
    result = bench_json("failover", *args, timeout=200)
    seen = [(r["signal"], r["hedging_requested"]) for r in result["runs"]]
    assert seen == [
        ("SIGKILL", "off"),
        ("SIGKILL", "on"),
        ("SIGSTOP", "off"),
        ("SIGSTOP", "on"),
    ]
    for run, row in zip(result["runs"], result["table"], strict=True):
        assert run["tasks_moved"] == run["tasks_on_a"] == 1  # on B, by a retry or a hedge
        assert row["target_s"] == (1.0 if run["signal"] == "SIGKILL" else 7.0)
        assert isinstance(row["within_target"], bool)
        assert run["settings"]["hedging_supported"] is result["hedging_supported"]
        if result["hedging_supported"]:
            assert run["settings"]["hedging"] is (run["hedging_requested"] == "on")
        assert isinstance(run["done_on_b"], int)
    assert not left_running(work)


def test_failover_of_the_leading_master_smoke(tmp_path: Path, pg_dsn: str) -> None:
    # one round on the session's PostgreSQL: every figure is there, nothing is left running;
    # no assertion on how fast
    work = tmp_path / "work"
    args = [
        *("--master", "--journal", pg_dsn, "--rounds", "1", "--time-scale", "25"),
        *("--timeout", "120", "--workdir", str(work), "--json"),
    ]
    whole = bench_json("failover", *args, timeout=150)
    assert whole["benchmark"] == "failover --master" and whole["target_s"] == 10.0
    assert whole["settings"] == {"lease_s": 5.0, "lease_renew_s": 1.0}
    (only,) = whole["rounds"]
    assert only["masters"] == 3 and only["tasks_running_at_kill"] >= 1
    for key in ("elected_s", "accepts_new_s", "results_s"):
        assert only[key] > 0, key
    assert only["elected_s"] <= only["accepts_new_s"]
    assert len(only["results"]) == only["tasks_running_at_kill"]
    assert isinstance(whole["within_target"], bool)
    assert left_running(work) == []
