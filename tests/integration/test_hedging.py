"""Hedged attempts with a real master and real agents: a board whose link drops has its running
tasks hedged on another board at once, long before the grace declares it dead."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from edgesched.agent.agent import Agent
from edgesched.core.state import DeviceState
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2

DONE = common_pb2.TASK_STATE_DONE


async def drop_link(cluster: InProcessCluster, agent: Agent) -> None:
    """The agent vanishes without a goodbye (no drain, no leave): its stream just ends."""
    for entry in list(cluster.agents):
        if entry[0] is agent:
            entry[2].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(entry[2], 10)
            cluster.agents.remove(entry)


async def running_on(cluster: InProcessCluster, ids: list[str], device_id: str) -> None:
    """Waits (bounded) until every task is out on the device."""
    for _ in range(500):
        tasks = [cluster.master.core.tasks.get(i) for i in ids]
        if all(t is not None and device_id in t.live.values() for t in tasks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the tasks never all reached {device_id}")


async def start_slow_then_fast(cluster: InProcessCluster) -> tuple[Agent, Agent, list[str]]:
    # rk3588 emulated 200× slower: a task takes seconds there, so it is still running when the
    # link drops (and far from the straggler threshold, 3 × its p95)
    slow = await cluster.add_agent("slow", emulate="rk3588", time_scale=200.0)
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(2)]
    await running_on(cluster, ids, slow.identity.agent_id)
    fast = await cluster.add_agent("fast")
    return slow, fast, ids


async def test_a_dropped_links_running_tasks_are_hedged_on_another_agent_before_the_grace(
    make_cluster: Any,
) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.2, hedge_budget=1.0)  # grace: 30 s
    slow, fast, ids = await start_slow_then_fast(cluster)
    slow_id, fast_id = slow.identity.agent_id, fast.identity.agent_id
    await drop_link(cluster, slow)
    results = await cluster.wait(ids, 20)
    core = cluster.master.core
    # settled by the hedges while the slow board is merely suspect: nothing waited for the grace
    assert core.devices[slow_id].state is DeviceState.SUSPECT
    assert {r.state for r in results.values()} == {DONE}
    assert {r.device_id for r in results.values()} == {fast_id}
    assert {r.attempts for r in results.values()} == {2}
    assert core.hedges_started == 2 and core.hedges_won == 2 and core.hedges_lost == 0
    await cluster.master.journal.flush()
    for task_id in ids:
        task = (await cluster.get(f"/api/v1/tasks/{task_id}")).json()
        assert task["state"] == "done"
        timings = task["timings"]
        assert timings["hedges"] == 1 and timings["hedge_won"] is True
        assert timings["attempts"] == 2 and timings["wasted_ms"] > 0
        assert "live" not in timings
    metrics = (await cluster.get("/metrics")).text
    assert 'edgesched_hedges_total{outcome="started"} 2.0' in metrics
    assert 'edgesched_hedges_total{outcome="won"} 2.0' in metrics
    assert "edgesched_hedge_wasted_seconds_total" in metrics
    summary = (await cluster.get("/api/v1/summary")).json()
    assert summary["tasks"] == {"done": 2}  # each task done exactly once


async def test_with_hedging_off_a_dropped_links_tasks_wait_for_the_grace(
    make_cluster: Any,
) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.2, dead_grace_s=1.5, hedging=False)
    slow, fast, ids = await start_slow_then_fast(cluster)
    slow_id, fast_id = slow.identity.agent_id, fast.identity.agent_id
    await drop_link(cluster, slow)
    results = await cluster.wait(ids, 20)
    core = cluster.master.core
    assert core.devices[slow_id].state is DeviceState.DEAD  # they ran elsewhere after the grace
    assert {r.state for r in results.values()} == {DONE}
    assert {r.device_id for r in results.values()} == {fast_id}
    for result in results.values():
        assert [e.kind for e in result.errors] == ["device_lost"]
    assert core.hedges_started == 0
