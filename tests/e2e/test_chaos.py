"""The chaos run, small: 200 tasks, a master and two agents SIGKILLed on the way, graded by the
run's own independent ledger (client acknowledgements against a bare result receiver)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TASKS, BAD = 200, 5


@pytest.mark.timeout(150)
def test_a_200_task_chaos_run_loses_nothing_and_kills_only_the_bad_pictures(
    tmp_path: Path,
) -> None:
    args = ["--tasks", str(TASKS), "--bad", str(BAD), "--master-kills", "1", "--agent-kills", "2"]
    ran = subprocess.run(
        [sys.executable, "-m", "edgesched", "chaos", *args, "--seed", "7", "--timeout", "120"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert ran.stdout.strip(), ran.stderr[-3000:]
    summary = json.loads(ran.stdout)
    assert set(summary) >= {
        "accepted",
        "done",
        "dead",
        "lost",
        "duplicates_delivered",
        "master_restarts",
        "agent_kills",
        "seconds",
    }
    context = f"{summary}\n{ran.stderr[-3000:]}"
    assert summary["accepted"] == TASKS, context
    assert summary["lost"] == 0, context
    assert summary["done"] + summary["dead"] == summary["accepted"], context
    assert summary["dead"] == BAD, context
    assert summary["master_restarts"] >= 1 and summary["agent_kills"] >= 2, context
    assert isinstance(summary["duplicates_delivered"], int), context  # at least once: may be >0
    assert ran.returncode == 0, context


@pytest.mark.timeout(240)
def test_a_chaos_run_across_three_masters_loses_nothing_and_accepts_nothing_twice(
    tmp_path: Path, pg_server: object
) -> None:
    # three masters on a throwaway PostgreSQL of the run's own (``pg_server`` only gates on
    # the server's programs being here): the leader SIGKILLed twice, the database crashed once
    args = [
        *("--masters", "3", "--journal", "postgresql", "--postgres-restarts", "1"),
        *("--tasks", "150", "--bad", str(BAD), "--master-kills", "2", "--agent-kills", "1"),
    ]
    ran = subprocess.run(
        [sys.executable, "-m", "edgesched", "chaos", *args, "--seed", "3", "--timeout", "180"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert ran.stdout.strip(), ran.stderr[-3000:]
    summary = json.loads(ran.stdout)
    context = f"{summary}\n{ran.stderr[-3000:]}"
    assert summary["masters"] == 3 and summary["postgres_restarts"] == 1, context
    assert summary["master_restarts"] >= 2, context  # each a leader of the moment, restarted
    assert summary["accepted"] == 150 and summary["lost"] == 0, context
    assert summary["accepted_twice"] == 0 and summary["tasks_journaled"] == 150, context
    assert summary["done"] + summary["dead"] == summary["accepted"], context
    assert summary["dead"] == BAD, context
    assert "SIGKILL the leader, master-" in ran.stderr, context
    assert ran.returncode == 0, context
