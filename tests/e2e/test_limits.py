"""The master against many idle connections: it raises its open-files limit at start, and a
master left short of descriptors does not flood its log."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

LOW_SOFT_LIMIT = 256  #: as systemd's default 1,024, only smaller, to need fewer connections
IDLE_CONNECTIONS = 400


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    http_port: int
    log: Path


@contextlib.contextmanager
def master_with_soft_limit(root: Path, env: dict[str, str] | None = None) -> Iterator[Started]:
    """``edgesched master`` started with a low soft open-files limit (only the child's)."""
    data = root / "master"
    log = root / "master.log"
    root.mkdir(parents=True, exist_ok=True)

    # the limit is lowered in the child by a small exec wrapper (preexec_fn is not safe with
    # the threads gRPC leaves in the test process)
    lower = (
        "import os, resource, sys; "
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW_SOFT_LIMIT}, hard)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'edgesched', *sys.argv[1:]])"
    )
    args = ["master", "--bind", "127.0.0.1", "--port", "0", "--http-port", "0"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", lower, *args, "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EDGESCHED_MASTER_AUTH": "off", **(env or {})},
            start_new_session=True,
        )
    try:
        endpoints = data / "endpoints.json"
        deadline = time.monotonic() + 30
        while not endpoints.exists():
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the master did not start in time"
            time.sleep(0.05)
        yield Started(proc, json.loads(endpoints.read_text())["http_port"], log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def proc_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def open_idle(port: int, count: int) -> list[socket.socket]:
    """Up to ``count`` idle connections; a connect that times out on a loaded machine is tried
    again (three tries each, bounded), one refused for want of descriptors is not."""
    idle = []
    for _ in range(count):
        for _try in range(3):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                break
            except TimeoutError:
                continue
            except OSError:
                break
    return idle


def test_many_idle_connections_do_not_starve_the_master(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * IDLE_CONNECTIONS:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise into")
    with master_with_soft_limit(tmp_path) as master:
        assert proc_limits(master.proc.pid) == (hard, hard)
        idle = open_idle(master.http_port, IDLE_CONNECTIONS)  # beyond the limit it started with
        try:
            # well beyond the soft limit it started with (a connect may still fail on a loaded
            # machine: what matters is that the master serves past its old limit)
            assert len(idle) > LOW_SOFT_LIMIT + 100, len(idle)
            time.sleep(0.5)  # the master accepts them all (or fails to)
            health = httpx.get(f"http://127.0.0.1:{master.http_port}/healthz", timeout=10)
            assert health.status_code == 200
        finally:
            for sock in idle:
                sock.close()
        text = master.log.read_text(errors="replace")
    assert "Too many open files" not in text
    assert "open files: soft limit raised from 256" in text  # it said what it did


def test_a_master_out_of_descriptors_does_not_flood_its_log(tmp_path: Path) -> None:
    # the limit left low on purpose: the accept loop fails at the speed of the loop, and each
    # failure used to be a log line (329 MB in a minute)
    with master_with_soft_limit(tmp_path, {"EDGESCHED_MASTER_RAISE_NOFILE": "false"}) as master:
        assert proc_limits(master.proc.pid)[0] == LOW_SOFT_LIMIT
        idle = open_idle(master.http_port, IDLE_CONNECTIONS)
        try:
            time.sleep(2.0)  # long enough for a flood to show, whatever the speed of the machine
        finally:
            for sock in idle:
                sock.close()
        lines = master.log.read_text(errors="replace").splitlines()
    starved = [line for line in lines if "Too many open files" in line]
    assert starved, "the master was expected to run out of descriptors"
    assert len(lines) < 200, f"{len(lines)} log lines in 2 s"


def test_the_shipped_units_set_an_open_files_limit() -> None:
    units = sorted((Path(__file__).resolve().parents[2] / "deploy" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        values = [
            line.split("=", 1)[1].strip()
            for line in unit.read_text().splitlines()
            if line.startswith("LimitNOFILE=")
        ]
        assert values and int(values[0]) >= 65536, unit.name
