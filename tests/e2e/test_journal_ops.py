"""The journal's operations with real processes: an online backup while the master takes tasks;
a master killed under load whose WAL is then lost refuses to start, naming what it found, and
`--repair` brings every acknowledged task back (issue 14, finding 3)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import grpc

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc


def edgesched(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesched", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit_until(cluster: LocalCluster, stop: threading.Event, acked: list[str]) -> None:
    """Submits one task after another until ``stop``; records every acknowledged id."""
    picture = png_bytes(16, 16)
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        for i in range(100_000):
            if stop.is_set():
                return
            request = client_pb2.SubmitRequest(
                client_id="load",
                idempotency_key=f"k{i}",
                task_type="layout",
                filename="a.png",
                payload=picture,
            )
            try:
                acked.append(stub.Submit(request, timeout=10).task_id)
            except grpc.RpcError:
                return  # the master was killed


def test_backup_under_load_then_a_lost_wal_is_refused_and_repaired(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.extra_master_args = []
    cluster.start_master()
    acked: list[str] = []
    stop = threading.Event()
    loader = threading.Thread(target=submit_until, args=(cluster, stop, acked))
    loader.start()
    try:
        while len(acked) < 50:
            loader.join(0.05)
            assert loader.is_alive()
        dest = tmp_path / "backup.db"
        done = edgesched("journal", "backup", str(dest), "--data-dir", str(cluster.master_dir))
        assert done.returncode == 0, done.stderr
        assert "backed up" in done.stdout and "quick_check ok" in done.stdout
        with sqlite3.connect(dest) as conn:
            assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] >= 50
        while len(acked) < 150:
            loader.join(0.05)
        cluster.kill("master")  # SIGKILL under load
    finally:
        stop.set()
        loader.join(30)
    db = cluster.master_dir / "edgesched.db"
    os.unlink(f"{db}-wal")
    refused = edgesched(
        "master", "--bind", "127.0.0.1", "--port", "0", "--http-port", "0",
        "--data-dir", str(cluster.master_dir), timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"journal {db}" in refused.stderr and "edgesched.db-wal" in refused.stderr
    assert "--repair" in refused.stderr

    cluster.extra_master_args = ["--repair"]
    cluster.start_master()
    log = (cluster.root / "logs" / "master.log").read_text()
    assert "repair: re-journaled" in log, log
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        for task_id in acked:  # every acknowledged task is there again
            stub.GetTask(client_pb2.GetTaskRequest(task_id=task_id), timeout=10)
