"""The CLI in processes: the demo, a master killed with SIGKILL, the client against bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2

EDGESCHED = [sys.executable, "-m", "edgesched"]


def run_cli(
    *args: str, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGESCHED, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_a_small_demo_finishes_every_task_over_three_emulated_boards(tmp_path: Path) -> None:
    done = run_cli(
        "demo", "--tasks", "6", "--json", "--time-scale", "10", "--workspace", "ws", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tasks"] == 6 and summary["done"] == 6 and summary["failed"] == 0
    assert summary["correct"] >= 0.8
    assert {d["type"] for d in summary["devices"].values()} <= {"atlas310", "rk3588", "orin"}
    assert sum(d["tasks"] for d in summary["devices"].values()) == 6
    assert sorted(p.name for p in (tmp_path / "ws/client/data/rst").iterdir())[:2] == [
        "1.txt",
        "2.txt",
    ]


def test_a_master_killed_right_after_acknowledging_a_task_finishes_it_after_restart(
    cluster: LocalCluster,
) -> None:
    cluster.start_master()
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        reply = client_pb2_grpc.TaskServiceStub(channel).Submit(
            client_pb2.SubmitRequest(
                client_id="c",
                idempotency_key="k1",
                task_type="layout",
                filename="a.png",
                payload=png_bytes(),
            ),
            timeout=10,
        )
    cluster.kill("master", signal.SIGKILL)  # acknowledged, never dispatched: only on disk
    cluster.grpc_port = cluster.http_port = 0
    cluster.start_master()
    cluster.start_agent("agent", ["--backend", "sleep"])
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        results = list(
            stub.WatchResults(client_pb2.WatchRequest(task_ids=[reply.task_id]), timeout=60)
        )
        again = stub.Submit(
            client_pb2.SubmitRequest(
                client_id="c",
                idempotency_key="k1",
                task_type="layout",
                filename="a.png",
                payload=png_bytes(),
            ),
            timeout=10,
        )
    assert [r.state for r in results] == [common_pb2.TASK_STATE_DONE]
    assert again.duplicate and again.task_id == reply.task_id


def test_client_send_reports_a_corrupt_picture_and_writes_the_other_labels(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_master()
    cluster.start_agent("agent", ["--backend", "onnx"])
    cluster.wait_for_devices(1)
    pictures = tmp_path / "req"
    pictures.mkdir()
    for i in (1, 2):
        (pictures / f"{i}.png").write_bytes(png_bytes(300 + i, 200))
    (pictures / "3.png").write_bytes(png_bytes(300, 200)[:150])
    out = tmp_path / "rst"
    sent = run_cli(
        "client",
        "send",
        "-H",
        "127.0.0.1",
        "-P",
        str(cluster.grpc_port),
        "-D",
        str(pictures),
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert sent.returncode == 1, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["sent"] == 3 and summary["done"] == 2 and summary["failed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["1.txt", "2.txt"]
    # the stage breakdown: every task's stages, and over the done ones
    by_file = {t["file"]: t for t in summary["tasks"]}
    assert by_file["3.png"]["state"] == "dead"
    for name in ("1.png", "2.png"):
        stages = by_file[name]
        assert stages["state"] == "done"
        assert stages["inference"] > 0 and stages["end_to_end"] >= stages["inference"]
    assert set(summary["stages_ms"]) >= {"queue_wait", "transfer", "inference", "end_to_end"}
    table = run_cli(
        "client", "send", "-P", str(cluster.grpc_port), "-D", str(pictures), "--out", str(out),
        "--no-progress", cwd=tmp_path, env={"COLUMNS": "200"},
    )  # fmt: skip
    assert "stages per task" in table.stdout and "1.png" in table.stdout
    assert "stage durations over done tasks" in table.stdout


def test_config_show_prints_the_effective_settings_with_environment_applied(tmp_path: Path) -> None:
    (tmp_path / "edgesched.toml").write_text("[master]\nport = 7000\n")
    shown = subprocess.run(
        [*EDGESCHED, "config", "show", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGESCHED_MASTER_HTTP_PORT": "7001"},
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "port = 7000" in shown.stdout and "http_port = 7001" in shown.stdout


def test_token_show_prints_the_token_the_master_created(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_master()
    shown = run_cli("token", "show", "--data-dir", str(cluster.master_dir), cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.strip() == cluster.token
    master_log = (cluster.root / "logs" / "master.log").read_text()
    assert cluster.token not in master_log  # never in a log: shown only to a terminal


def test_rerunning_client_send_never_doubles_work(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.start_master()
    cluster.start_agent("agent", ["--backend", "sleep"])
    cluster.wait_for_devices(1)
    pictures = tmp_path / "req"
    pictures.mkdir()
    for i in range(4):
        (pictures / f"{i}.png").write_bytes(png_bytes(20 + i, 20))
    args = ["client", "send", "-P", str(cluster.grpc_port), "-D", str(pictures), "--json"]
    first = json.loads(run_cli(*args, "--out", str(tmp_path / "a"), cwd=tmp_path).stdout)
    second = json.loads(run_cli(*args, "--out", str(tmp_path / "b"), cwd=tmp_path).stdout)
    assert first["done"] == second["done"] == 4
    assert first["duplicates"] == 0 and second["duplicates"] == 4
    import httpx

    assert len(httpx.get(f"{cluster.http_url}/api/v1/tasks", timeout=5).json()["tasks"]) == 4


def test_a_dead_task_is_listed_and_retried_from_the_cli(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_master()
    cluster.start_agent("agent", ["--backend", "sleep"])
    cluster.wait_for_devices(1)
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        reply = stub.Submit(
            client_pb2.SubmitRequest(
                client_id="c",
                idempotency_key="bad",
                task_type="layout",
                filename="b.png",
                payload=png_bytes(200, 200)[:120],
            ),
            timeout=10,
        )
        list(stub.WatchResults(client_pb2.WatchRequest(task_ids=[reply.task_id]), timeout=30))
    master = ["--master", cluster.http_url]
    listed = json.loads(
        run_cli("tasks", "ls", "--state", "dead", "--json", *master, cwd=tmp_path).stdout
    )
    assert [t["id"] for t in listed["tasks"]] == [reply.task_id]
    retried = run_cli("tasks", "retry", reply.task_id, *master, cwd=tmp_path)
    assert retried.returncode == 0 and "failure count was reset" in retried.stdout
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        (result,) = stub.WatchResults(client_pb2.WatchRequest(task_ids=[reply.task_id]), timeout=30)
    assert result.state == common_pb2.TASK_STATE_DEAD  # the picture is still broken
    assert result.attempts == 2 and len(result.errors) == 2
    shown = run_cli("tasks", "show", reply.task_id, *master, cwd=tmp_path, env={"COLUMNS": "200"})
    assert shown.returncode == 0
    assert "dead" in shown.stdout and "end_to_end" in shown.stdout
    errors = shown.stdout.split("errors, oldest first")[1]
    assert errors.count("bad_input") == 2  # both attempts' errors, one row each
    raw = json.loads(
        run_cli("tasks", "show", reply.task_id, "--json", *master, cwd=tmp_path).stdout
    )
    assert raw["id"] == reply.task_id and len(raw["errors"]) == 2
    again = run_cli("tasks", "retry", "nope", *master, cwd=tmp_path)
    assert again.returncode == 1 and "404" in again.stderr
