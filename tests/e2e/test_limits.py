"""The master against many idle connections: it raises its open-files limit at start."""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgesched.demo.cluster import LocalCluster

LOW_SOFT_LIMIT = 256
IDLE_CONNECTIONS = 400


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """Processes started inside inherit this soft limit (as from systemd's default 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def proc_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def test_many_idle_connections_do_not_starve_the_master(cluster: LocalCluster) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * IDLE_CONNECTIONS:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise into")
    with soft_nofile(LOW_SOFT_LIMIT):
        cluster.start_master()
    master = cluster.procs["master"]
    assert proc_limits(master.pid) == (hard, hard)
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):  # more than the soft limit it was started with
            idle.append(socket.create_connection(("127.0.0.1", cluster.http_port), timeout=5))
        time.sleep(0.5)  # the master accepts them all (or fails to)
        health = httpx.get(f"{cluster.http_url}/healthz", timeout=10)
        assert health.status_code == 200
    finally:
        for sock in idle:
            sock.close()
    text = (cluster.root / "logs" / "master.log").read_text(errors="replace")
    assert "Too many open files" not in text
    assert "open files" in text  # it said what it did


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


def test_a_master_out_of_descriptors_does_not_flood_its_log(cluster: LocalCluster) -> None:
    # the limit left low on purpose: the accept loop fails at the speed of the loop, and each
    # failure used to be a log line (329 MB in a minute)
    with soft_nofile(LOW_SOFT_LIMIT):
        cluster.start_master(env={"EDGESCHED_MASTER_RAISE_NOFILE": "false"})
    assert proc_limits(cluster.procs["master"].pid)[0] == LOW_SOFT_LIMIT
    log_path = cluster.root / "logs" / "master.log"
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", cluster.http_port), timeout=1))
        time.sleep(2.0)  # long enough for a flood to show, whatever the speed of the machine
    finally:
        for sock in idle:
            sock.close()
    lines = log_path.read_text(errors="replace").splitlines()
    starved = [line for line in lines if "Too many open files" in line]
    assert starved, "the master was expected to run out of descriptors"
    assert len(lines) < 200, f"{len(lines)} log lines in 2 s"
