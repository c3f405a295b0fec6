"""The client API's batched RPCs (protocol 1.2) on a real master: SubmitBatches answers a batch
in order with every rule of a single submission, WatchResultBatches delivers every result once,
the old RPCs still work, and the clients fall back to them on a master without the new ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgesched.client.batches import BatchSubmitter, ResultWatch
from edgesched.client.send import Sender, task_stub
from edgesched.journal.base import TaskRow
from edgesched.journal.memory import MemoryJournal
from edgesched.journal.sqlite import SQLiteJournal
from edgesched.master import intake
from edgesched.master.intake import TaskServicer
from edgesched.master.submission import Submission
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import client_pb2, common_pb2
from edgesched.wire import tasks


def request(key: str, payload: bytes | None = None, **kw: Any) -> tasks.SubmitRequest:
    return tasks.submit_request(
        client_id=kw.pop("client_id", "batcher"),
        idempotency_key=key,
        task_type=kw.pop("task_type", "layout"),
        filename=kw.pop("filename", f"{key}.png"),
        payload=png_bytes() if payload is None else payload,
        **kw,
    )


async def batches(
    cluster: InProcessCluster, *groups: list[tasks.SubmitRequest]
) -> list[list[tasks.SubmitReply]]:
    """Sends each group as one SubmitBatch on one stream; the replies of each."""

    async def messages() -> AsyncIterator[tasks.SubmitBatch]:
        for group in groups:
            yield tasks.submit_batch(group)

    call = cluster.stub.SubmitBatches(messages(), metadata=cluster.auth, timeout=30)
    return [list(answer.replies) async for answer in call]


async def test_a_batch_of_n_gets_n_replies_in_order_and_every_result_once(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    watch = ResultWatch(cluster.stub, tasks.watch_request("batcher"), metadata=cluster.auth)
    await asyncio.wait_for(watch.registered(), 10)
    assert watch.batched
    keys = [f"k{i}" for i in range(40)]
    first, second = await batches(
        cluster, [request(k) for k in keys[:25]], [request(k) for k in keys[25:]]
    )
    replies = first + second
    assert [r.idempotency_key for r in replies] == keys
    assert all(r.task_id and not r.error_code and not r.duplicate for r in replies)
    assert len({r.task_id for r in replies}) == 40
    assert len(await cluster.master.journal.task_ids()) == 40

    await cluster.add_agent("a1")
    seen: list[str] = []
    messages = 0

    async def collect() -> None:
        nonlocal messages
        async for batch in watch.batches():
            messages += 1
            seen.extend(r.task_id for r in batch)
            if len(seen) >= 40:
                return

    await asyncio.wait_for(collect(), 60)
    watch.cancel()
    assert sorted(seen) == sorted(r.task_id for r in replies)  # each once
    assert 1 <= messages <= 40
    # by task ids: the finished ones come at once (batched), then the stream closes
    ids = [r.task_id for r in replies]
    done = ResultWatch(cluster.stub, tasks.watch_request(task_ids=ids), metadata=cluster.auth)
    got = [r for batch in [b async for b in done.batches()] for r in batch]
    assert sorted(r.task_id for r in got) == sorted(ids)
    assert all(r.state == common_pb2.TASK_STATE_DONE for r in got)


async def test_a_repeated_key_within_a_batch_and_across_batches_is_one_task(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    earlier = await cluster.submit("old", png_bytes(), client_id="batcher")
    (replies, again) = await batches(
        cluster,
        [request("a"), request("b"), request("a"), request("old"), request("a")],
        [request("b"), request("c")],
    )
    a, b, a2, old, a3 = replies
    assert not a.duplicate and not b.duplicate
    assert (a2.task_id, a2.duplicate) == (a.task_id, True)
    assert (a3.task_id, a3.duplicate) == (a.task_id, True)
    assert (old.task_id, old.duplicate) == (earlier.task_id, True)
    assert (again[0].task_id, again[0].duplicate) == (b.task_id, True)
    assert not again[1].duplicate
    assert len(await cluster.master.journal.task_ids()) == 4  # old, a, b, c
    assert cluster.master.inflight["batcher"] == 4  # a duplicate keeps no place
    # no stray payload: the log holds an entry for each task the journal holds, no more
    assert set(cluster.master.plog.where) == await cluster.master.journal.task_ids()


async def test_a_bad_item_is_refused_alone_among_good_ones(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    (replies,) = await batches(
        cluster,
        [
            request("good1"),
            request("empty", b""),
            request("not-a-picture", b"hello"),
            request("", png_bytes()),  # no key
            request("unknown", task_type="no-such-type"),
            request("good2"),
            request("bad-strategy", strategy="no-such-strategy"),
        ],
    )
    codes = [r.error_code for r in replies]
    assert codes[0] == "" and codes[5] == ""
    assert codes[1:5] == ["INVALID_ARGUMENT"] * 4
    assert codes[6] == "INVALID_ARGUMENT"
    assert all(r.error and not r.task_id for r in replies if r.error_code)
    assert [r.idempotency_key for r in replies] == [
        "good1",
        "empty",
        "not-a-picture",
        "",
        "unknown",
        "good2",
        "bad-strategy",
    ]
    assert await cluster.master.journal.task_ids() == {replies[0].task_id, replies[5].task_id}
    assert cluster.master.inflight["batcher"] == 2


async def test_the_in_flight_limit_holds_across_a_batch(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.settings.master.max_inflight_per_client = 3
    (replies,) = await batches(cluster, [request(f"k{i}") for i in range(5)])
    # at the limit, a later batch: a known key still gets its answer, a new one is refused
    (later,) = await batches(cluster, [request("k1"), request("k9")])
    assert [r.error_code for r in replies] == [
        "",
        "",
        "",
        "RESOURCE_EXHAUSTED",
        "RESOURCE_EXHAUSTED",
    ]
    assert "max_inflight_per_client" in replies[3].error
    assert (later[0].task_id, later[0].duplicate) == (replies[1].task_id, True)
    assert later[1].error_code == "RESOURCE_EXHAUSTED"
    assert cluster.master.inflight["batcher"] == 3
    assert len(await cluster.master.journal.task_ids()) == 3


async def test_items_beyond_the_batch_limit_are_refused_with_the_reason(
    make_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster: InProcessCluster = await make_cluster()
    monkeypatch.setattr(intake, "MAX_BATCH", 3)
    (replies,) = await batches(cluster, [request(f"k{i}") for i in range(5)])
    assert [r.error_code for r in replies] == [
        "",
        "",
        "",
        "RESOURCE_EXHAUSTED",
        "RESOURCE_EXHAUSTED",
    ]
    assert "at most 3" in replies[4].error
    assert [r.idempotency_key for r in replies] == [f"k{i}" for i in range(5)]


async def test_a_cancelled_batch_leaves_no_journaled_task_unqueued(make_cluster) -> None:
    """The shield: a client gone while its batch commits still gets its tasks queued."""
    cluster: InProcessCluster = await make_cluster()
    master = cluster.master
    for turns in range(6):
        subs = [Submission("gone", f"t{turns}-{i}", "echo", "x.bin", b"payload") for i in range(20)]
        job = asyncio.create_task(master.submit_many(subs))
        for _ in range(turns):
            await asyncio.sleep(0)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    await master.journal.flush()
    await asyncio.sleep(0.05)
    journaled = await master.journal.task_ids()
    assert journaled  # some commits were under way when their callers went away
    assert journaled == set(master.rows)  # none ran: no agent
    assert master.inflight["gone"] == len(journaled)


async def test_the_old_rpcs_still_work(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()

    async def messages() -> AsyncIterator[tasks.SubmitRequest]:
        for key in ("s1", "s2", "s1"):
            yield request(key)

    call = cluster.stub.SubmitStream(messages(), metadata=cluster.auth, timeout=30)
    replies = [r async for r in call]
    assert [r.duplicate for r in replies] == [False, False, True]
    await cluster.add_agent("a1")
    results = await cluster.wait([r.task_id for r in replies[:2]])
    assert len(results) == 2


# ---- the journal's insert_many -------------------------------------------------------------


def _row(task_id: str, key: str) -> TaskRow:
    return TaskRow(task_id, "c", key, "echo", "x.bin", "/nowhere", 1, 1)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_insert_many_isolates_a_failing_item_and_dedupes_keys(
    tmp_path: Path, kind: str
) -> None:
    journal = SQLiteJournal(tmp_path / "j.db") if kind == "sqlite" else MemoryJournal()
    await journal.start()
    try:
        order: list[str] = []

        def before(name: str, fail: bool = False) -> Any:
            def run() -> None:
                order.append(name)
                if fail:
                    raise OSError(f"cannot write {name}")

            return run

        out = await journal.insert_many(
            [
                (_row("t1", "a"), before("t1")),
                (_row("t2", "b"), before("t2", fail=True)),
                (_row("t3", "a"), before("t3")),  # the key of t1
                (_row("t4", "c"), None),
            ]
        )
        assert order == ["t1", "t2", "t3"]
        assert out[0] == (_row("t1", "a"), False)
        assert isinstance(out[1], OSError)
        assert isinstance(out[2], tuple) and out[2][0].id == "t1" and out[2][1] is True
        assert isinstance(out[3], tuple) and out[3][1] is False
        assert await journal.task_ids() == {"t1", "t4"}
        assert await journal.insert_many([]) == []
    finally:
        await journal.close()


# ---- an older master: the clients fall back ------------------------------------------------


async def old_master(cluster: InProcessCluster) -> tuple[grpc.aio.Server, str]:
    """A server with only the 1.0/1.1 client API (Submit, SubmitStream, WatchResults, GetTask)
    in front of the cluster's master: the batched RPCs are UNIMPLEMENTED there."""
    servicer = TaskServicer(cluster.master)
    req, rep = client_pb2, common_pb2
    handlers = {
        "Submit": grpc.unary_unary_rpc_method_handler(
            servicer.Submit, req.SubmitRequest.FromString, req.SubmitReply.SerializeToString
        ),
        "SubmitStream": grpc.stream_stream_rpc_method_handler(
            servicer.SubmitStream, req.SubmitRequest.FromString, req.SubmitReply.SerializeToString
        ),
        "WatchResults": grpc.unary_stream_rpc_method_handler(
            servicer.WatchResults, req.WatchRequest.FromString, rep.TaskResult.SerializeToString
        ),
        "GetTask": grpc.unary_unary_rpc_method_handler(
            servicer.GetTask, req.GetTaskRequest.FromString, rep.TaskResult.SerializeToString
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("edgesched.v1.TaskService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_the_clients_fall_back_to_the_old_rpcs_on_an_older_master(
    make_cluster, tmp_path: Path
) -> None:
    cluster: InProcessCluster = await make_cluster()
    await cluster.add_agent("a1")
    server, target = await old_master(cluster)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = task_stub(channel)
            watch = ResultWatch(stub, tasks.watch_request("batcher"))
            await asyncio.wait_for(watch.registered(), 10)
            assert not watch.batched
            replies: list[tasks.SubmitReply] = []
            submitter = BatchSubmitter(stub, lambda _, reply: replies.append(reply))
            for i in range(10):  # queued before the stream opens: sent again on SubmitStream
                submitter.put(request(f"f{i}"))
            submitter.close()
            await asyncio.wait_for(submitter.run(), 30)
            assert not submitter.batched
            assert [r.idempotency_key for r in replies] == [f"f{i}" for i in range(10)]
            got: set[str] = set()

            async def collect() -> None:
                async for batch in watch.batches():
                    got.update(r.task_id for r in batch)
                    if len(got) == 10:
                        return

            await asyncio.wait_for(collect(), 60)
            watch.cancel()
            assert got == {r.task_id for r in replies}
        pictures = tmp_path / "pictures"
        pictures.mkdir()
        for i in range(5):
            (pictures / f"p{i}.png").write_bytes(png_bytes())
        report = await Sender(target, "layout", "old-client", timeout_s=60).run(
            sorted(pictures.iterdir())
        )
        assert report.done == 5 and not report.unfinished
    finally:
        await server.stop(None)
