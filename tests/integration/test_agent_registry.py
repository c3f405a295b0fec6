"""Devices long gone are forgotten: registry, API, metrics and the journal's agents."""

from __future__ import annotations

import asyncio

import pytest

from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes


async def test_a_device_gone_longer_than_the_setting_is_forgotten_and_may_come_back(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    master = cluster.master
    master.settings.master.forget_dead_after_s = 0.2
    agent = await cluster.add_agent("a")
    agent_id = agent.identity.agent_id
    await cluster.stop_agent(agent)  # SIGTERM's path: drain, goodbye
    assert master.core.devices[agent_id].state.value == "left"
    assert agent_id in await master.journal.agents()
    for _ in range(200):  # the ticker does this every minute
        if await master.forget_gone():
            break
        await asyncio.sleep(0.05)
    assert agent_id not in master.core.devices
    assert (await cluster.get("/api/v1/devices")).json()["devices"] == []
    assert agent_id not in (await cluster.get("/metrics")).text
    assert agent_id not in await master.journal.agents()
    assert agent_id not in master.agent_credentials
    # it kept its identity and still has the join token: it joins again, under the same id
    again = await cluster.add_agent("a")
    assert again.identity.agent_id == agent_id
    (device,) = (await cluster.get("/api/v1/devices")).json()["devices"]
    assert device["id"] == agent_id and device["state"] == "online"


async def test_forgetting_is_off_with_zero(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.master.settings.master.forget_dead_after_s = 0.0
    agent = await cluster.add_agent("a")
    await cluster.stop_agent(agent)
    await asyncio.sleep(0.05)
    assert await cluster.master.forget_gone() == []
    assert agent.identity.agent_id in cluster.master.core.devices


async def test_an_operators_drain_outlives_the_agents_restart_and_is_told_to_it(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    master = cluster.master
    agent = await cluster.add_agent("a")
    agent_id = agent.identity.agent_id
    master.drain(agent_id, True)
    await cluster.stop_agent(agent)  # its own drain and goodbye on top of the operator's
    again = await cluster.add_agent("a")
    for _ in range(200):  # the master tells the new process it is drained
        if again.draining:
            break
        await asyncio.sleep(0.02)
    assert again.draining
    device = master.core.devices[agent_id]
    assert device.draining and device.operator_drained
    reply = await cluster.submit("k", png_bytes())
    await asyncio.sleep(0.3)
    assert (await master.get_task(reply.task_id)).state == "queued"
    master.drain(agent_id, False)
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    assert result.device_id == agent_id
    assert not again.draining


async def test_an_agent_refused_by_the_join_limits_tries_again_later(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.master.settings.master.max_agents = 1
    await cluster.add_agent("first")
    with pytest.raises(TimeoutError):  # refused for now, and still trying
        await asyncio.wait_for(cluster.add_agent("second"), 1.0)
    instance, _, task = cluster.agents[-1]
    assert not task.done() and not instance.connected.is_set()
    cluster.master.settings.master.max_agents = 2  # room again (a device forgotten, a new cap)
    await asyncio.wait_for(instance.connected.wait(), 30)
    assert len(cluster.master.core.devices) == 2
