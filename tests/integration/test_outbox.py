"""Results finished while the link was down wait in the agent's on-disk outbox and are sent on
rejoin; the master keeps the attempt instead of running the task again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2


async def test_a_result_finished_while_the_master_was_down_is_delivered_on_rejoin(
    make_cluster,
) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.2)
    agent = await cluster.add_agent("a1", emulate="atlas310", time_scale=40.0)  # ~1 s a task
    reply = await cluster.submit("k", png_bytes())
    for _ in range(100):
        if agent.running:
            break
        await asyncio.sleep(0.02)
    assert agent.running, "the task should be running on the agent"
    grpc_port, http_port = cluster.server.grpc_port, cluster.server.http_port
    await cluster.channel.close()
    await cluster.server.stop()  # the master goes away mid-task
    for _ in range(300):
        if len(agent.outbox) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(agent.outbox) == 1, "the result waits on disk"
    assert list(Path(agent.settings.agent.data_dir, "outbox").glob("*.msg"))
    cluster.settings.master.port, cluster.settings.master.http_port = grpc_port, http_port
    await cluster.start()  # same data dir, same ports: the agent finds it again
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    assert result.state == common_pb2.TASK_STATE_DONE
    assert result.attempts == 1 and list(result.errors) == []
    for _ in range(100):
        if len(agent.outbox) == 0:
            break
        await asyncio.sleep(0.05)
    assert len(agent.outbox) == 0, "removed once the master acknowledged it"
