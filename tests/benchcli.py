"""Running `edgesched bench SCENARIO` from the smoke tests: one process, its exit checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil


def run_bench(
    scenario: str, *args: str, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the scenario to its end; it must exit 0 (its stderr's tail is the message if not)."""
    done = subprocess.run(
        [sys.executable, "-m", "edgesched", "bench", scenario, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def bench_json(
    scenario: str, *args: str, timeout: float = 180, cwd: Path | None = None
) -> dict[str, Any]:
    """The one JSON object the scenario prints with ``--json`` (pass it among ``args``)."""
    result: dict[str, Any] = json.loads(run_bench(scenario, *args, timeout=timeout, cwd=cwd).stdout)
    return result


def left_running(path: Path) -> list[str]:
    """Processes whose command line names ``path`` (what the benchmark started there)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(cmdline)
    return found
