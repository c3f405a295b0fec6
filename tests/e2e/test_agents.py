"""Agents killed mid-task, agents and masters stopped with SIGTERM."""

from __future__ import annotations

import signal
import time

import grpc
import httpx

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2

SLOW = ["--backend", "sleep", "--emulate", "atlas310", "--time-scale", "200"]  # ~5 s a task


def submit(cluster: LocalCluster, key: str = "k") -> str:
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        reply = client_pb2_grpc.TaskServiceStub(channel).Submit(
            client_pb2.SubmitRequest(
                client_id="c",
                idempotency_key=key,
                task_type="layout",
                filename="a.png",
                payload=png_bytes(),
            ),
            timeout=10,
        )
    return str(reply.task_id)


def wait_result(cluster: LocalCluster, task_id: str) -> common_pb2.TaskResult:
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        (result,) = stub.WatchResults(client_pb2.WatchRequest(task_ids=[task_id]), timeout=90)
    assert isinstance(result, common_pb2.TaskResult)
    return result


def task(cluster: LocalCluster, task_id: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{cluster.http_url}/api/v1/tasks/{task_id}", timeout=5).json()  # type: ignore[no-any-return]


def wait_running_on(cluster: LocalCluster, task_id: str, device_type: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = task(cluster, task_id)
        if t["state"] in ("assigned", "running") and t["device_type"] == device_type:
            return str(t["device_id"])
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never ran on a {device_type}")


def test_an_agent_killed_mid_task_has_its_task_run_elsewhere_after_the_grace(
    cluster: LocalCluster,
) -> None:
    env = {
        "EDGESCHED_SCHEDULING_HEARTBEAT_INTERVAL_S": "0.3",
        "EDGESCHED_SCHEDULING_DEAD_GRACE_S": "1",
        "EDGESCHED_SCHEDULING_HEDGING": "false",  # the grace alone (the hedged run: below)
    }
    cluster.start_master(env=env)
    cluster.start_agent("slow", SLOW)
    cluster.wait_for_devices(1)
    task_id = submit(cluster)
    first = wait_running_on(cluster, task_id, "atlas310")
    cluster.kill("slow", signal.SIGKILL)
    cluster.start_agent("fast", ["--backend", "sleep"])
    result = wait_result(cluster, task_id)
    assert result.state == common_pb2.TASK_STATE_DONE and result.device_id != first
    assert result.attempts == 2
    assert result.errors[0].kind == "device_lost" and "no heartbeat" in result.errors[0].message


def test_an_agent_killed_mid_task_has_its_task_hedged_elsewhere_without_waiting_for_the_grace(
    cluster: LocalCluster,
) -> None:
    cluster.start_master(env={"EDGESCHED_SCHEDULING_DEAD_GRACE_S": "3600"})  # never ends here
    cluster.start_agent("slow", SLOW)
    cluster.wait_for_devices(1)
    task_id = submit(cluster)
    first = wait_running_on(cluster, task_id, "atlas310")
    cluster.kill("slow", signal.SIGKILL)  # its link breaks: suspect at once, its task hedged
    cluster.start_agent("fast", ["--backend", "sleep"])
    result = wait_result(cluster, task_id)
    assert result.state == common_pb2.TASK_STATE_DONE and result.device_id != first
    assert result.attempts == 2
    assert list(result.errors) == []  # the first attempt was not lost: the hedge won first


def test_an_agent_that_comes_back_without_its_task_has_it_queued_again_at_once(
    cluster: LocalCluster,
) -> None:
    env = {"EDGESCHED_SCHEDULING_DEAD_GRACE_S": "3600"}  # the grace never ends in this test
    cluster.start_master(env=env)
    cluster.start_agent("slow", SLOW)
    cluster.wait_for_devices(1)
    task_id = submit(cluster)
    device = wait_running_on(cluster, task_id, "atlas310")
    cluster.kill("slow", signal.SIGKILL)
    cluster.start_agent("slow", ["--backend", "sleep"])  # same data dir: same id, nothing running
    result = wait_result(cluster, task_id)
    assert result.state == common_pb2.TASK_STATE_DONE and result.device_id == device
    assert result.attempts == 2
    assert result.errors[0].message == "device came back without it"


def test_sigterm_drains_an_agent_and_stops_the_master_cleanly(cluster: LocalCluster) -> None:
    cluster.start_master()
    cluster.start_agent(
        "agent", ["--backend", "sleep", "--emulate", "atlas310", "--time-scale", "40"]
    )
    cluster.wait_for_devices(1)
    task_id = submit(cluster)
    device = wait_running_on(cluster, task_id, "atlas310")
    proc = cluster.procs["agent"]
    proc.send_signal(signal.SIGTERM)  # mid-task: it finishes the task, then leaves
    assert proc.wait(timeout=30) == 0
    t = task(cluster, task_id)
    assert t["state"] == "done" and t["device_id"] == device and t["attempts"] == 1
    (listed,) = httpx.get(f"{cluster.http_url}/api/v1/devices", timeout=5).json()["devices"]
    assert listed["state"] == "left"
    master = cluster.procs["master"]
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=30) == 0
    cluster.grpc_port = cluster.http_port = 0
    cluster.start_master()  # the journal it left opens and holds the finished task
    assert task(cluster, task_id)["state"] == "done"


def test_an_agent_restarted_after_sigterm_takes_tasks_again(cluster: LocalCluster) -> None:
    # systemctl restart: SIGTERM (the agent drains itself and leaves), then a start with the
    # same data dir. The master used to keep the device draining for good, and queued tasks
    # ended dead after no_device_ttl_s.
    cluster.start_master(env={"EDGESCHED_SCHEDULING_NO_DEVICE_TTL_S": "20"})
    cluster.start_agent("agent", ["--backend", "sleep"])
    (first,) = cluster.wait_for_devices(1)
    proc = cluster.procs["agent"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    cluster.start_agent("agent", ["--backend", "sleep"])
    deadline = time.monotonic() + 30
    while True:
        (device,) = cluster.devices()
        if device["state"] != "left":
            break
        assert time.monotonic() < deadline, "the agent never rejoined"
        time.sleep(0.05)
    assert device["id"] == first["id"]
    task_id = submit(cluster, "after-restart")
    result = wait_result(cluster, task_id)
    assert result.state == common_pb2.TASK_STATE_DONE and result.device_id == first["id"]
    (device,) = cluster.devices()
    assert device["state"] == "online" and not device["draining"]
