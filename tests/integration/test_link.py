"""A real master and real agents over gRPC on loopback (port 0), journal in a temp dir."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2

DONE = common_pb2.TASK_STATE_DONE
DEAD = common_pb2.TASK_STATE_DEAD


async def test_a_task_travels_from_client_to_agent_and_back(make_cluster) -> None:
    cluster = await make_cluster()
    await cluster.add_agent("a1")
    reply = await cluster.submit("k1", png_bytes())
    assert reply.task_id and not reply.duplicate
    results = await cluster.wait([reply.task_id])
    result = results[reply.task_id]
    assert result.state == DONE
    assert result.device_id.startswith("cpu-")
    assert result.attempts == 1
    assert result.timings.end_to_end_ms > 0


async def test_the_same_idempotency_key_never_makes_a_second_task(make_cluster) -> None:
    cluster = await make_cluster()
    first = await cluster.submit("same", png_bytes())
    second = await cluster.submit("same", png_bytes())
    assert second.duplicate and second.task_id == first.task_id
    counts = await cluster.master.journal.counts()
    assert sum(counts.values()) == 1


async def test_an_unknown_task_type_is_refused_naming_the_config_key(make_cluster) -> None:
    cluster = await make_cluster()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.submit("k", png_bytes(), task_type="yolo")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tasktypes.yolo" in (caught.value.details() or "")
    assert await cluster.master.journal.counts() == {}


async def test_bytes_that_are_not_a_picture_are_refused_at_intake(make_cluster) -> None:
    cluster = await make_cluster()
    for payload in (b"", b"definitely not an image"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cluster.submit(f"bad{len(payload)}", payload)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await cluster.master.journal.counts() == {}


async def test_a_truncated_picture_ends_dead_with_a_readable_error_while_others_finish(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    await cluster.add_agent("a1", backend="onnx")
    good = png_bytes(320, 240)
    broken = png_bytes(320, 240, (10, 200, 10))[:200]  # header intact, data cut off
    ids = [(await cluster.submit(f"good{i}", good)).task_id for i in range(2)]
    bad = (await cluster.submit("broken", broken)).task_id
    results = await cluster.wait([*ids, bad], limit_s=60)
    assert all(results[i].state == DONE for i in ids)
    assert results[bad].state == DEAD
    assert "truncated" in results[bad].error or "corrupt" in results[bad].error
    assert results[bad].errors[0].kind == "bad_input"


async def test_slots_and_prefetch_bound_what_a_device_holds_and_runs(make_cluster) -> None:
    cluster = await make_cluster()
    agent = await cluster.add_agent("a1", emulate="rk3588", time_scale=20.0)
    prefetch = cluster.master.settings.scheduling.prefetch
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(9)]
    peak = running_peak = 0
    for _ in range(200):
        device = cluster.master.core.devices[agent.identity.agent_id]
        peak = max(peak, len(device.inflight))
        running_peak = max(running_peak, agent.meter.busy)
        assert len(device.inflight) <= 3 + prefetch  # the master holds back the rest
        assert agent.meter.busy <= 3  # the board runs one per NPU core; the others wait there
        if all(i not in cluster.master.rows for i in ids):
            break
        await asyncio.sleep(0.02)
    results = await cluster.wait(ids)
    assert all(r.state == DONE for r in results.values())
    assert peak == 3 + prefetch
    assert running_peak == 3


async def test_an_agent_with_a_wrong_token_is_refused_and_never_listed(make_cluster) -> None:
    from edgesched.agent.agent import Agent
    from edgesched.agent.link import Refused

    cluster = await make_cluster()
    settings = cluster.agent_settings("intruder", token="esj_wrong")
    with pytest.raises(Refused, match="join token"):
        await asyncio.wait_for(Agent(settings).run(asyncio.Event()), 20)
    response = await cluster.get("/api/v1/devices")
    assert response.json()["devices"] == []


async def test_devices_show_metrics_and_emulation(make_cluster) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.1)
    await cluster.add_agent("a1", emulate="orin", time_scale=10.0)
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(3)]
    await cluster.wait(ids)
    await asyncio.sleep(0.3)
    (device,) = (await cluster.get("/api/v1/devices")).json()["devices"]
    assert device["type"] == "orin" and device["emulated"] is True
    assert device["state"] == "online"
    assert device["memory"] > 0
    assert device["slots"] == 1 and device["tasks_done"] == 3
    assert device["mean_service_ms"] > 0
    assert device["heartbeat_age_s"] < 0.2 * 2 + 0.2
    assert device["latency_ms"] > 0


async def test_a_lost_agent_is_suspect_then_dead_and_its_task_runs_elsewhere(make_cluster) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.1, dead_grace_s=0.5)
    slow = await cluster.add_agent(
        "slow", emulate="atlas310", time_scale=400.0, drain_timeout_s=0.1
    )
    reply = await cluster.submit("k", png_bytes())
    await asyncio.sleep(0.3)
    assert cluster.master.core.tasks[reply.task_id].device_id == slow.identity.agent_id
    await cluster.stop_agent(slow)  # drain times out: it hands the task back and leaves
    await cluster.add_agent("fast")
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    assert result.state == DONE
    assert result.device_id != slow.identity.agent_id
    assert result.attempts == 2
    assert result.errors[0].kind == "device_lost" and not result.errors[0].counted


async def test_cancel_through_the_api_ends_the_task(make_cluster) -> None:
    cluster = await make_cluster()
    reply = await cluster.submit("k", png_bytes())  # no agent: it waits in the queue
    refused = await cluster.post(f"/api/v1/tasks/{reply.task_id}/cancel", token=False)
    assert refused.status_code == 401 and "API token" in refused.json()["msg"]
    response = await cluster.post(f"/api/v1/tasks/{reply.task_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    again = await cluster.post(f"/api/v1/tasks/{reply.task_id}/cancel")
    missing = await cluster.get("/api/v1/tasks/nope")
    assert again.status_code == 409
    assert missing.status_code == 404 and missing.json()["status"] == "error"


async def test_rest_lists_tasks_by_state_and_serves_openapi(make_cluster) -> None:
    cluster = await make_cluster()
    await cluster.add_agent("a1")
    reply = await cluster.submit("k", png_bytes())
    await cluster.wait([reply.task_id])
    await cluster.master.journal.flush()
    done = (await cluster.get("/api/v1/tasks?state=done")).json()["tasks"]
    assert [t["id"] for t in done] == [reply.task_id]
    assert (await cluster.get("/api/v1/tasks?state=dead")).json()["tasks"] == []
    assert (await cluster.get("/api/v1/tasks?state=bogus")).status_code == 422
    task = (await cluster.get(f"/api/v1/tasks/{reply.task_id}")).json()
    assert task["state"] == "done" and task["result"]["label"] == ""
    assert task["timings"]["end_to_end_ms"] >= 0
    spec = (await cluster.get("/openapi.json")).json()
    assert "/api/v1/devices" in spec["paths"]
    assert (await cluster.get("/healthz")).json()["status"] == "ok"
