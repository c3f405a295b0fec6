"""Several masters in processes: the leader SIGKILLed mid-run, another master started on
another loopback address over the same journal (SQLite: a failover without PostgreSQL); the
agent and a running `client send`, both given both addresses, follow it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster, free_port_on

EDGESCHED = [sys.executable, "-m", "edgesched"]


def done_tasks(url: str) -> int:
    try:
        listed = httpx.get(f"{url}/api/v1/tasks", params={"state": "done"}, timeout=5).json()
    except httpx.HTTPError:
        return 0
    return int(listed["count"])


def test_a_leader_killed_mid_run_is_followed_by_the_agent_and_client_send(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.grpc_port = free_port_on("127.0.0.1", "127.0.0.2")
    cluster.http_port = free_port_on("127.0.0.1", "127.0.0.2")
    cluster.start_master()
    both = "127.0.0.1,127.0.0.2"
    cluster.start_agent(
        "agent",
        ["--master-ip", both, "--emulate", "atlas310", "--time-scale", "10", "--backend", "sleep"],
    )
    cluster.wait_for_devices(1)
    count = 20
    pictures = tmp_path / "in"
    pictures.mkdir()
    for i in range(count):
        (pictures / f"{i}.png").write_bytes(png_bytes(color=(i, 30, 30)))
    args = ["client", "send", "-H", both, "--port", str(cluster.grpc_port), "-D", str(pictures)]
    args += ["--out", str(tmp_path / "out"), "--json", "--timeout", "150"]
    client = subprocess.Popen(
        [*EDGESCHED, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while done_tasks(cluster.http_url) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done_tasks(cluster.http_url) < count, "the leader goes mid-run"
        cluster.kill("master", signal.SIGKILL)
        cluster.extra_master_args = ["--bind", "127.0.0.2"]  # the last --bind counts
        cluster.start_master()  # the same ports, data dir and journal, on 127.0.0.2
        out, err = client.communicate(timeout=180)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["sent"] == summary["done"] == count and summary["failed"] == 0
    assert len(list((tmp_path / "out").glob("*.txt"))) == count
    new_leader = f"http://127.0.0.2:{cluster.http_port}"
    listed = httpx.get(f"{new_leader}/api/v1/tasks", params={"limit": 500}, timeout=5).json()
    assert listed["count"] == count, "each picture has exactly one task"
    assert {t["state"] for t in listed["tasks"]} == {"done"}
    assert len({t["idempotency_key"] for t in listed["tasks"]}) == count
    log = (cluster.root / "logs" / "agent.log").read_text(errors="replace")
    assert f"joined the master at 127.0.0.2:{cluster.grpc_port}" in log
