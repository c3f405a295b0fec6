"""The master killed (SIGKILL) exactly at each named failure point, then started again on the
same ports: every acknowledged task finishes once, nothing is run twice blindly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2
from tests.seedpeers import Receiver, upload_image, upload_message

FAST = {"EDGESCHED_SCHEDULING_HEARTBEAT_INTERVAL_S": "0.3"}


def request(key: str = "k1") -> client_pb2.SubmitRequest:
    return client_pb2.SubmitRequest(
        client_id="c",
        idempotency_key=key,
        task_type="layout",
        filename="a.png",
        payload=png_bytes(),
    )


def wait_dead(cluster: LocalCluster, timeout: float = 20) -> None:
    proc = cluster.procs["master"]
    proc.wait(timeout=timeout)
    assert proc.returncode == -9, "the failure point should have killed the master"


def restart(cluster: LocalCluster) -> None:
    """Starts the master again on the ports it had, without the failure point."""
    cluster.start_master(env=FAST)


def submit_until_acknowledged(target: str, req: client_pb2.SubmitRequest) -> client_pb2.SubmitReply:
    deadline = time.monotonic() + 60
    while True:
        try:
            with grpc.insecure_channel(target) as channel:
                reply: client_pb2.SubmitReply = client_pb2_grpc.TaskServiceStub(channel).Submit(
                    req, timeout=5
                )
                return reply
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def result_of(target: str, task_id: str) -> common_pb2.TaskResult:
    with grpc.insecure_channel(target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        (result,) = list(stub.WatchResults(client_pb2.WatchRequest(task_ids=[task_id]), timeout=60))
    assert isinstance(result, common_pb2.TaskResult)
    return result


def all_tasks(cluster: LocalCluster) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = httpx.get(f"{cluster.http_url}/api/v1/tasks", timeout=5).json()[
        "tasks"
    ]
    return tasks


@pytest.mark.parametrize("point", ["before_commit", "after_commit_before_ack"])
def test_a_master_killed_around_the_commit_of_a_submission_loses_and_doubles_nothing(
    point: str, cluster: LocalCluster
) -> None:
    cluster.start_master(env={**FAST, "EDGESCHED_FAILPOINTS": point})
    with grpc.insecure_channel(cluster.grpc_target) as channel, pytest.raises(grpc.RpcError):
        client_pb2_grpc.TaskServiceStub(channel).Submit(request(), timeout=10)  # never answered
    wait_dead(cluster)
    restart(cluster)
    cluster.start_agent("agent", ["--backend", "sleep"])
    reply = submit_until_acknowledged(cluster.grpc_target, request())  # the client's retry
    assert reply.duplicate == (point == "after_commit_before_ack")
    assert result_of(cluster.grpc_target, reply.task_id).state == common_pb2.TASK_STATE_DONE
    assert [t["id"] for t in all_tasks(cluster)] == [reply.task_id]
    if point == "before_commit":  # its payload-log entry was written, its commit never was
        log = (cluster.root / "logs" / "master.log").read_text(errors="replace")
        assert "it was never committed" in log


def test_a_master_killed_after_sending_an_assignment_keeps_the_agents_attempt(
    cluster: LocalCluster,
) -> None:
    cluster.start_master(env={**FAST, "EDGESCHED_FAILPOINTS": "after_assignment_sent"})
    # the task takes ~1 s on this agent, so it is still running when the master comes back
    cluster.start_agent(
        "agent", ["--backend", "sleep", "--emulate", "atlas310", "--time-scale", "40"]
    )
    cluster.wait_for_devices(1)
    reply = submit_until_acknowledged(cluster.grpc_target, request())
    wait_dead(cluster)
    restart(cluster)
    result = result_of(cluster.grpc_target, reply.task_id)
    assert result.state == common_pb2.TASK_STATE_DONE
    assert result.attempts == 1, "reconciled with what the agent reported, not run again"
    assert list(result.errors) == []


def test_a_master_killed_before_pushing_a_seed_result_pushes_it_after_restart(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    receiver = Receiver(tmp_path / "rst")
    try:
        cluster.extra_master_args = ["--result-port", str(receiver.port)]
        cluster.start_master(env={**FAST, "EDGESCHED_FAILPOINTS": "before_result_push"})
        cluster.start_agent("agent", ["--backend", "sleep"])
        cluster.wait_for_devices(1)
        reply = upload_image(cluster.grpc_target, upload_message("a.png", png_bytes()))
        wait_dead(cluster)
        assert receiver.received == []
        restart(cluster)
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.received == ["127.0.0.1_1.txt"]
        assert reply["filename"] == "127.0.0.1_1.png"
        # the receiver has the file before the master has read its 200 and marked the task
        while time.monotonic() < deadline:
            (task,) = all_tasks(cluster)
            if task["delivery"] == "delivered":
                break
            time.sleep(0.1)
        assert task["state"] == "done" and task["delivery"] == "delivered"
    finally:
        receiver.close()


def test_failure_points_are_named_and_unknown_ones_refused(cluster: LocalCluster) -> None:
    with pytest.raises(Exception, match="exited"):
        cluster.start_master(env={"EDGESCHED_FAILPOINTS": "nowhere"}, timeout=15)
    log = (cluster.root / "logs" / "master.log").read_text()
    assert "unknown failure point 'nowhere'" in log
    assert json.dumps("before_commit") in json.dumps(log) or "before_commit" in log
