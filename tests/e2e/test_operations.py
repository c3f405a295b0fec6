"""Operators steer the cluster from the CLI: drain, undrain, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2

SLOWISH = ["--backend", "sleep", "--emulate", "orin", "--time-scale", "40"]  # ~0.2 s a task


def cli(cluster: LocalCluster, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGESCHED_API_TOKEN": cluster.api_token if token else "nope"}
    return subprocess.run(
        [sys.executable, "-m", "edgesched", *args, "--master", cluster.http_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cluster.root,
    )


def run_tasks(cluster: LocalCluster, prefix: str, n: int) -> list[common_pb2.TaskResult]:
    metadata = (("authorization", f"Bearer {cluster.api_token}"),)
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        replies = [
            stub.Submit(
                client_pb2.SubmitRequest(
                    client_id="ops",
                    idempotency_key=f"{prefix}{i}",
                    task_type="layout",
                    filename="a.png",
                    payload=png_bytes(),
                ),
                timeout=10,
                metadata=metadata,
            )
            for i in range(n)
        ]
        results = list(
            stub.WatchResults(
                client_pb2.WatchRequest(task_ids=[r.task_id for r in replies]),
                timeout=60,
                metadata=metadata,
            )
        )
    return results


@pytest.mark.auth
def test_a_drained_device_takes_nothing_new_and_status_shows_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_master()
    cluster.start_agent("a", SLOWISH)
    cluster.start_agent("b", SLOWISH)
    first, second = sorted(d["id"] for d in cluster.wait_for_devices(2))
    refused = cli(cluster, "devices", "drain", first, token=False)
    assert refused.returncode == 1 and "401" in refused.stderr
    drained = cli(cluster, "devices", "drain", first, "--json")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["state"] == "draining"
    status = json.loads(cli(cluster, "status", "--json").stdout)
    assert status["devices"] == {"draining": 1, "online": 1}
    per_device = Counter(r.device_id for r in run_tasks(cluster, "x", 6))
    assert per_device == {second: 6}
    assert cli(cluster, "devices", "undrain", first).returncode == 0
    per_device = Counter(r.device_id for r in run_tasks(cluster, "y", 8))
    assert set(per_device) == {first, second}
    table = cli(cluster, "status")
    assert table.returncode == 0 and first in table.stdout
