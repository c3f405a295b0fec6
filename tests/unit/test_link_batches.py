"""Protocol 1.2's batches on the agent link (issue 16), each sender on its own: the master's
``AgentSession`` puts every inline assignment queued when it gets to them in one message, the
agent's ``outgoing`` every queued report; a lone one leaves at once, the caps hold, control frames
and the order of reports and heartbeats are kept. Never a timer: nothing here waits for a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from edgesched.agent.link import BATCH_BYTES as REPORT_BYTES
from edgesched.agent.link import BATCH_REPORTS, outgoing
from edgesched.journal.base import TaskRow
from edgesched.master.session import BATCH_BYTES, BATCH_TASKS, INLINE_BYTES, AgentSession
from edgesched.wire import link


def row(i: int) -> TaskRow:
    return TaskRow(
        id=f"t{i}",
        client_id="c",
        idem_key=f"k{i}",
        task_type="layout",
        filename=f"{i}.png",
        payload_path="/nonexistent",  # every payload here is in memory
        payload_size=0,
        submitted_ms=0,
    )


def session(payloads: dict[str, bytes], minor: int = 2) -> AgentSession:
    s = AgentSession("a1", "peer")
    s.cached = payloads.get
    s.inline_payloads = minor >= 1
    s.batches = minor >= 2
    return s


async def take(stream: AsyncIterator[Any], count: int) -> list[Any]:
    """The next ``count`` messages of a stream that is expected to have them queued."""
    return [await asyncio.wait_for(anext(stream), 5) for _ in range(count)]


def assert_idle(stream: AsyncIterator[Any]) -> Any:
    """Nothing more is queued: the next message would wait (returns the pending read)."""
    return asyncio.ensure_future(anext(stream))


async def idle(stream: AsyncIterator[Any]) -> None:
    pending = assert_idle(stream)
    await asyncio.sleep(0.01)
    assert not pending.done(), "the stream sent more than was queued"
    pending.cancel()


async def test_a_burst_queued_in_one_turn_goes_as_one_batch() -> None:
    payloads = {f"t{i}": b"x" * 100 for i in range(20)}
    s = session(payloads)
    for i in range(20):
        s.send_assignment(row(i), attempt=1)
    stream = s.outgoing()
    [message] = await take(stream, 1)
    assert link.kind_of(message) == "assignments"
    batch = link.assignments_of(message)
    assert [a.task_id for a in batch] == [f"t{i}" for i in range(20)]
    assert all(a.payload_inline and a.payload == b"x" * 100 and a.attempt == 1 for a in batch)
    await idle(stream)
    assert s.messages_sent == 1
    s.close("test")


async def test_a_lone_assignment_leaves_at_once_as_itself() -> None:
    s = session({"t0": b"lone"})
    stream = s.outgoing()
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    s.send_assignment(row(0), attempt=3)
    message = await asyncio.wait_for(pending, 5)
    assert link.kind_of(message) == "assignment"
    assert message.assignment.payload == b"lone" and message.assignment.attempt == 3
    s.close("test")


async def test_a_batch_is_capped_by_count_and_by_bytes() -> None:
    count = BATCH_TASKS + 5
    s = session({f"t{i}": b"y" for i in range(count)})
    for i in range(count):
        s.send_assignment(row(i), 1)
    stream = s.outgoing()
    first, second = await take(stream, 2)
    assert len(link.assignments_of(first)) == BATCH_TASKS
    assert len(link.assignments_of(second)) == 5
    s.close("test")

    big = INLINE_BYTES - 1  # the largest payload that rides inline
    per_batch = BATCH_BYTES // big
    count = per_batch + 3
    s = session({f"t{i}": b"z" * big for i in range(count)})
    for i in range(count):
        s.send_assignment(row(i), 1)
    stream = s.outgoing()
    first, second = await take(stream, 2)
    assert len(link.assignments_of(first)) == per_batch
    assert first.ByteSize() < BATCH_BYTES + 64 * 1024  # the payloads' bytes plus the fields
    assert len(link.assignments_of(second)) == 3
    s.close("test")


async def test_control_frames_go_first_and_a_large_payload_follows_in_chunks() -> None:
    large = b"L" * (INLINE_BYTES + 10)
    s = session({"t0": b"a", "t1": b"b", "t2": large, "t3": b"c"})
    for i in range(4):
        s.send_assignment(row(i), 1)
    s.send_control(link.drain(True, "test"))
    stream = s.outgoing()
    messages = await take(stream, 5)
    kinds = [link.kind_of(m) for m in messages]
    # the drain overtakes everything; the two small ones batch; the large one is not inline
    # and ends the batch; the last small one goes alone after it
    assert kinds == ["drain", "assignments", "assignment", "chunk", "assignment"]
    assert [a.task_id for a in link.assignments_of(messages[1])] == ["t0", "t1"]
    assert not messages[2].assignment.payload_inline and messages[3].chunk.last
    assert messages[4].assignment.task_id == "t3" and messages[4].assignment.payload_inline
    await idle(stream)
    s.close("test")


async def test_an_older_agent_gets_one_message_per_assignment() -> None:
    for minor, per_task in ((1, ["assignment"]), (0, ["assignment", "chunk"])):
        s = session({f"t{i}": b"p" for i in range(3)}, minor=minor)
        for i in range(3):
            s.send_assignment(row(i), 1)
        stream = s.outgoing()
        messages = await take(stream, 3 * len(per_task))
        assert [link.kind_of(m) for m in messages] == per_task * 3
        assert all(m.assignment.payload_inline == (minor == 1) for m in messages[:: len(per_task)])
        await idle(stream)
        s.close("test")


async def test_a_cancelled_assignment_never_joins_a_batch() -> None:
    s = session({f"t{i}": b"p" for i in range(3)})
    for i in range(3):
        s.send_assignment(row(i), 1)
    s.send_cancel("t1", 1, "moved")
    stream = s.outgoing()
    cancel, batch = await take(stream, 2)
    assert link.kind_of(cancel) == "cancel"
    assert [a.task_id for a in link.assignments_of(batch)] == ["t0", "t2"]
    s.close("test")


# ---- the agent's side --------------------------------------------------------------------


def started(i: int) -> link.AgentMessage:
    return link.task_started(f"t{i}", 1, 0.5)


def done(i: int, label: str = "ok") -> link.AgentMessage:
    return link.task_done(
        task_id=f"t{i}",
        attempt=1,
        label=label,
        detections=(),
        timings={"total_ms": 1.0},
        backend="noop",
        payload_bytes=1,
    )


def beat(seq: int) -> link.AgentMessage:
    return link.heartbeat(
        seq=seq,
        cpu=0,
        memory=0,
        xpu=-1,
        xpu_memory=-1,
        temperature_c=float("nan"),
        power_w=float("nan"),
        bandwidth_mbps=0,
        latency_ms=0,
        probe="",
        free_slots=1,
        agent_time_unix_ms=0,
        echo_seq=0,
    )


def flat(messages: list[link.AgentMessage]) -> list[str]:
    """What the messages carry, in order: each report's kind and task, else the message's kind."""
    out = []
    for m in messages:
        reports = link.reports_of(m)
        if reports:
            out += [f"{type(r).__name__}:{r.task_id}" for r in reports]
        else:
            out.append(link.kind_of(m))
    return out


async def test_reports_queued_together_go_as_one_batch_in_order() -> None:
    q: Any = asyncio.Queue()
    for i in range(10):
        q.put_nowait(started(i))
        q.put_nowait(done(i))
    stream = outgoing(q, lambda: True)
    [message] = await take(stream, 1)
    assert link.kind_of(message) == "reports"
    assert len(message.reports.reports) == 20
    assert flat([message]) == [f"{k}:t{i}" for i in range(10) for k in ("TaskStarted", "TaskDone")]
    await idle(stream)


async def test_a_lone_report_leaves_at_once_as_itself() -> None:
    q: Any = asyncio.Queue()
    stream = outgoing(q, lambda: True)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    q.put_nowait(done(0))
    message = await asyncio.wait_for(pending, 5)
    assert link.kind_of(message) == "result"


async def test_a_heartbeat_between_reports_keeps_its_place() -> None:
    # the outbox counts a result as delivered once a heartbeat sent after it is acknowledged:
    # a result must never travel after a heartbeat it was queued before
    q: Any = asyncio.Queue()
    for m in (done(0), done(1), beat(7), done(2), link.goodbye("bye"), None, done(3)):
        q.put_nowait(m)
    messages = [m async for m in outgoing(q, lambda: True)]
    assert [link.kind_of(m) for m in messages] == [
        "reports",
        "heartbeat",
        "result",
        "goodbye",
    ]
    assert flat(messages[:1]) == ["TaskDone:t0", "TaskDone:t1"]
    assert q.get_nowait() is not None  # what follows the half-close is not sent


async def test_report_batches_are_capped() -> None:
    q: Any = asyncio.Queue()
    for i in range(BATCH_REPORTS + 3):
        q.put_nowait(done(i))
    stream = outgoing(q, lambda: True)
    first, second = await take(stream, 2)
    assert len(first.reports.reports) == BATCH_REPORTS
    assert len(link.reports_of(second)) == 3

    # by bytes: three labels of 0.3 MiB fit in 1 MiB, the fourth starts the next batch; a
    # report larger than the cap goes alone
    q = asyncio.Queue()
    third = "x" * (REPORT_BYTES * 3 // 10)
    for i in range(5):
        q.put_nowait(done(i, third))
    q.put_nowait(done(5, "y" * (REPORT_BYTES + 1)))
    q.put_nowait(done(6))
    stream = outgoing(q, lambda: True)
    messages = await take(stream, 4)
    assert [len(link.reports_of(m)) for m in messages] == [3, 2, 1, 1]
    assert all(m.ByteSize() <= REPORT_BYTES for m in messages[:2])
    assert link.kind_of(messages[2]) == "result" and link.kind_of(messages[3]) == "result"


async def test_to_an_older_master_every_report_goes_alone() -> None:
    q: Any = asyncio.Queue()
    for i in range(3):
        q.put_nowait(done(i))
    stream = outgoing(q, lambda: False)
    assert [link.kind_of(m) for m in await take(stream, 3)] == ["result"] * 3


def test_a_report_batch_decodes_to_the_reports_a_single_message_would() -> None:
    failed = link.task_failed("t9", 2, "backend", "boom", retryable=True)
    batch = link.report_batch([started(1), done(1), failed])
    assert link.reports_of(link.decode_agent_message(link.encode(batch))) == [
        *link.reports_of(started(1)),
        *link.reports_of(done(1)),
        *link.reports_of(failed),
    ]
    assert link.reports_of(beat(1)) == []
