"""Protocol 1.2 through a real master (gRPC on loopback, SQLite in a temp dir): an agent of 1.2
gets the assignments queued for it in one message and may answer with one batch of reports,
handled with one dispatch; agents of 1.1 and 1.0 get one message per assignment (and chunks) as
before; fencing holds inside a batch; a real agent sends its reports in batches.

Tasks are queued before the agent joins, so the master dispatches them all in the join's turn:
what forms a batch is then what was queued, not how fast anything ran."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest

from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from edgesched.wire import link

DONE = common_pb2.TASK_STATE_DONE
TASKS = 8


class LinkAgent:
    """Speaks the agent link by hand at a given protocol minor, to see each message."""

    def __init__(self, cluster: Any, minor: int) -> None:
        self.minor = minor
        self.channel = grpc.aio.insecure_channel(cluster.grpc_target)
        self.queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        self.call = agent_pb2_grpc.AgentLinkStub(self.channel).Connect(self._out())

    async def _out(self) -> Any:
        while True:
            yield await self.queue.get()

    async def join(self, token: str, slots: int) -> agent_pb2.RegisterReply:
        self.queue.put_nowait(
            agent_pb2.AgentMessage(
                register=agent_pb2.Register(
                    protocol=agent_pb2.ProtocolVersion(major=1, minor=self.minor),
                    join_token=token,
                    device_type="cpu",
                    capabilities=agent_pb2.Capabilities(task_types=["layout"], slots=slots),
                )
            )
        )
        reply = await asyncio.wait_for(self.call.read(), 10)
        assert link.kind_of(reply) == "registered", reply
        registered: agent_pb2.RegisterReply = reply.registered
        return registered

    async def assignments(self, count: int) -> tuple[list[agent_pb2.Assignment], list[str]]:
        """Reads until ``count`` assignments have their whole payload: them, and the kind of
        every message that came (heartbeat acks aside)."""
        complete: list[agent_pb2.Assignment] = []
        waiting: dict[str, agent_pb2.Assignment] = {}
        kinds: list[str] = []
        while len(complete) < count:
            message = await asyncio.wait_for(self.call.read(), 10)
            kind = link.kind_of(message)
            if kind == "heartbeat_ack":
                continue
            kinds.append(kind)
            for a in link.assignments_of(message):
                if a.payload_inline:
                    complete.append(a)
                else:
                    waiting[a.task_id] = a
            if kind == "chunk" and message.chunk.last:
                complete.append(waiting.pop(message.chunk.task_id))
        return complete, kinds

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def result(task_id: str, attempt: int) -> agent_pb2.AgentMessage:
    return link.task_done(
        task_id=task_id,
        attempt=attempt,
        label="batched",
        detections=(),
        timings={"total_ms": 1.0},
        backend="noop",
        payload_bytes=1,
    )


def count_calls(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[Any]:
    """Records the arguments of every call of ``target.name`` (which still runs)."""
    calls: list[Any] = []
    original = getattr(target, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(target, name, counted)
    return calls


@pytest.mark.parametrize(
    ("minor", "expected_kinds"),
    [
        (2, ["assignments"]),  # all of them in one message
        (1, ["assignment"] * TASKS),  # 1.1: one per task, payload inline
        (0, ["assignment", "chunk"] * TASKS),  # 1.0: the payload in a chunk
    ],
)
async def test_each_protocol_gets_its_assignments_and_its_tasks_done(
    make_cluster, monkeypatch: pytest.MonkeyPatch, minor: int, expected_kinds: list[str]
) -> None:
    cluster = await make_cluster()
    ids = [(await cluster.submit(f"p{minor}-{i}", png_bytes())).task_id for i in range(TASKS)]
    agent = LinkAgent(cluster, minor)
    try:
        reply = await agent.join(cluster.master.token, slots=TASKS)
        assert (reply.protocol.major, reply.protocol.minor) == (1, 2)
        assignments, kinds = await agent.assignments(TASKS)
        assert kinds == expected_kinds
        assert sorted(a.task_id for a in assignments) == sorted(ids)
        pumps = count_calls(monkeypatch, cluster.master.results.pump, "pump")
        answers = [result(a.task_id, a.attempt) for a in assignments]
        if minor >= 2:  # one message, one dispatch after all of its results
            agent.queue.put_nowait(link.report_batch(answers))
        else:
            for answer in answers:
                agent.queue.put_nowait(answer)
        results = await cluster.wait(ids)
        assert all(results[i].state == DONE and results[i].attempts == 1 for i in ids)
        if minor >= 2:
            assert len(pumps) == 1
    finally:
        await agent.close()


async def test_fencing_holds_inside_a_batch(make_cluster, caplog) -> None:
    caplog.set_level(logging.INFO, "edgesched.master")
    cluster = await make_cluster()
    ids = [(await cluster.submit(f"f{i}", png_bytes())).task_id for i in range(3)]
    agent = LinkAgent(cluster, 2)
    try:
        await agent.join(cluster.master.token, slots=3)
        assignments, kinds = await agent.assignments(3)
        assert kinds == ["assignments"]
        assert sorted(a.task_id for a in assignments) == sorted(ids)
        first, second, third = assignments
        agent.queue.put_nowait(
            link.report_batch(
                [
                    link.task_started(first.task_id, first.attempt, 0.1),
                    result(first.task_id, first.attempt + 1),  # not the live attempt
                    result(second.task_id, second.attempt),
                    result("never-given", 1),
                    link.task_failed(third.task_id, third.attempt + 1, "backend", "stale"),
                    result(third.task_id, third.attempt),
                ]
            )
        )
        done = await cluster.wait([second.task_id, third.task_id])
        assert done[second.task_id].state == DONE and done[third.task_id].state == DONE
        assert done[third.task_id].attempts == 1 and list(done[third.task_id].errors) == []
        assert f"discarded result of task {first.task_id} attempt {first.attempt + 1}" in (
            caplog.text
        )
        assert "discarded result of task never-given" in caplog.text
        task = cluster.master.core.tasks[first.task_id]
        assert task.attempt == first.attempt and not task.state.final
        agent.queue.put_nowait(result(first.task_id, first.attempt))  # the live one counts
        late = await cluster.wait([first.task_id])
        assert late[first.task_id].state == DONE and late[first.task_id].label == "batched"
    finally:
        await agent.close()


async def test_a_real_agent_gets_a_batch_and_sends_its_reports_in_batches(
    make_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = await make_cluster()
    ids = [(await cluster.submit(f"r{i}", png_bytes())).task_id for i in range(TASKS)]
    batches = count_calls(monkeypatch, cluster.master, "task_reports")
    agent = await cluster.add_agent("a1", slots=TASKS)
    results = await cluster.wait(ids)
    assert all(results[i].state == DONE for i in ids)
    # the agent started all of the batch's tasks in one turn: their started reports (at least)
    # went up together, handled as one batch
    assert max(len(reports) for _device, reports in batches) > 1
    reported = [r.task_id for _device, reports in batches for r in reports]
    assert set(ids) <= set(reported)
    session = cluster.master.sessions[agent.identity.agent_id]
    assert session.batches
