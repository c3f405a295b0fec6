"""The seed's programs reusing names, both receiver generations, the split task manager's
credential, and the agent's simulated churn. Peers are independent (tests/seedpeers.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from edgesched.journal.base import TaskRow
from edgesched.master.compat.taskmanager import TaskManager
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2
from tests.seedpeers import (
    ForkReceiver,
    LaterReceiver,
    Receiver,
    SeedTaskManager,
    upload_message,
)

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 10)]


async def until(condition: Callable[[], object], limit_s: float = 30.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def delivered(cluster: InProcessCluster, count: int) -> list[TaskRow]:
    """Waits until ``count`` tasks are done and marked delivered (the master marks a task
    after it read the receiver's 200, a moment after the receiver has the file)."""
    rows: list[TaskRow] = []

    async def check() -> bool:
        nonlocal rows
        await cluster.master.journal.flush()
        rows = await cluster.master.journal.list_tasks(None, 100)
        return len(rows) == count and all(r.delivery == "delivered" for r in rows)

    for _ in range(600):
        if await check():
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"not delivered: {[(r.state, r.delivery) for r in rows]}")


def upload_folder(cluster: InProcessCluster) -> Path:
    return Path(cluster.settings.master.data_dir) / "upload"


def leftovers(cluster: InProcessCluster) -> list[str]:
    return sorted(p.name for p in upload_folder(cluster).rglob("*") if p.is_file())


@pytest.mark.parametrize("generation", ["A", "B"])
async def test_a_restarted_seed_task_manager_reusing_names_loses_nothing_and_strands_nothing(
    make_cluster, tmp_path: Path, generation: str
) -> None:
    cluster = await make_cluster()
    receiver = Receiver(tmp_path / "rst")
    cluster.settings.master.result_port = receiver.port
    try:
        await cluster.add_agent("a1")
        first = SeedTaskManager(upload_folder(cluster), cluster.http, generation)
        for colour in COLOURS[:3]:
            await asyncio.to_thread(first.upload, "127.0.0.1", "x.png", png_bytes(color=colour))
        await delivered(cluster, 3)
        assert leftovers(cluster) == []  # delivered uploads go: the names are free again
        # restarted: it scans an empty folder and numbers from 1 again; one picture is even the
        # same as before under the same name (a new file all the same: a new request)
        second = SeedTaskManager(upload_folder(cluster), cluster.http, generation)
        for colour in (COLOURS[0], COLOURS[3]):
            await asyncio.to_thread(second.upload, "127.0.0.1", "x.png", png_bytes(color=colour))
        assert [a for a in second.answers] == [
            (202, {"status": "queued", "msg": "task enqueued"})
        ] * 2
        rows = await delivered(cluster, 5)
        assert sorted(r.metadata["seed_file"] for r in rows) == [
            "127.0.0.1_1.png",
            "127.0.0.1_1.png",
            "127.0.0.1_2.png",
            "127.0.0.1_2.png",
            "127.0.0.1_3.png",
        ]
        await until(lambda: len(receiver.received) == 5)
        assert leftovers(cluster) == []
    finally:
        receiver.close()


async def test_the_seeds_own_upload_folder_reused_keeps_its_files_and_loses_no_new_picture(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    folder = upload_folder(cluster) / "127.0.0.1"
    folder.mkdir(parents=True)
    for n in (1, 2):  # what the seed itself left there (with --keep-upload), never scheduled here
        (folder / f"127.0.0.1_{n}.png").write_bytes(png_bytes(color=(n, n, n)))
    receiver = Receiver(tmp_path / "rst")
    cluster.settings.master.result_port = receiver.port
    try:
        await cluster.add_agent("a1")
        manager = SeedTaskManager(upload_folder(cluster), cluster.http, "B")  # numbers past 2
        for colour in COLOURS[:2]:
            await asyncio.to_thread(manager.upload, "127.0.0.1", "x.png", png_bytes(color=colour))
        await delivered(cluster, 2)
        await until(lambda: len(receiver.received) == 2)
        assert sorted(receiver.received) == ["127.0.0.1_3.txt", "127.0.0.1_4.txt"]
        assert leftovers(cluster) == ["127.0.0.1_1.png", "127.0.0.1_2.png"]
    finally:
        receiver.close()


async def test_a_retried_schedule_request_is_one_task_and_a_finished_one_is_not_queued_again(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    cluster.settings.master.keep_upload = True  # the file stays: a retry can name it again
    receiver = Receiver(tmp_path / "rst")
    cluster.settings.master.result_port = receiver.port
    manager = SeedTaskManager(upload_folder(cluster), cluster.http, "B")
    try:
        name = await asyncio.to_thread(manager.upload, "127.0.0.1", "a.png", png_bytes())
        body = {
            "ip": "127.0.0.1",
            "tasktype": "layout",
            "filename": name,
            "req_id": "r1",
            "total_num": 1,
        }
        assert (await asyncio.to_thread(manager.schedule, body))[0] == 202
        assert (await asyncio.to_thread(manager.schedule, body))[0] == 202  # the retry
        assert len(await cluster.master.journal.list_tasks(None, 10)) == 2  # upload's + r1's
        await cluster.add_agent("a1")
        await delivered(cluster, 2)
        # a retry of a finished request queues nothing, so it is not told "queued"
        status, reply = await asyncio.to_thread(manager.schedule, body)
        assert (status, reply) == (200, {"status": "done", "msg": "task already finished"})
        assert len(await cluster.master.journal.list_tasks(None, 10)) == 2
        # the same name with new content is a new picture: a new task
        (upload_folder(cluster) / "127.0.0.1" / name).write_bytes(png_bytes(color=(1, 2, 3)))
        assert (await asyncio.to_thread(manager.schedule, body))[0] == 202
        await delivered(cluster, 3)
    finally:
        receiver.close()


async def test_a_schedule_naming_a_missing_file_queues_none_of_its_files(make_cluster) -> None:
    cluster = await make_cluster()
    manager = SeedTaskManager(upload_folder(cluster), cluster.http, "B")
    folder = upload_folder(cluster) / "10.0.0.9"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes())
    body = {"ip": "10.0.0.9", "tasktype": "layout", "filenames": ["a.png", "b.png"]}
    status, reply = await asyncio.to_thread(manager.schedule, body)
    assert (status, reply["msg"]) == (400, "failed to open image file 10.0.0.9/b.png")
    assert await cluster.master.journal.counts() == {}


async def test_both_receiver_generations_file_results_where_they_expect(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    first, later = Receiver(tmp_path / "first"), LaterReceiver(tmp_path / "later")
    try:
        await cluster.add_agent("a1")
        target = f"127.0.0.1:{cluster.server.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            upload = channel.unary_unary("/ImageUpload/UploadImage")
            cluster.settings.master.result_port = later.port
            await upload(upload_message("a.png", png_bytes(), tasktype="YoloV5"), timeout=10)
            await delivered(cluster, 1)
            cluster.settings.master.result_port = first.port
            await upload(upload_message("b.png", png_bytes(), tasktype="yolo"), timeout=10)
            await delivered(cluster, 2)
        assert later.saved == [tmp_path / "later" / "YoloV5" / "rst" / "127.0.0.1_1.txt"]
        assert first.received == ["127.0.0.1_2.txt"]
        assert (tmp_path / "first" / "127.0.0.1_2.txt").is_file()
    finally:
        first.close()
        later.close()


async def test_the_forks_receiver_files_a_stream_under_the_req_id_its_sender_printed(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    fork = ForkReceiver(tmp_path / "fork")
    cluster.settings.master.result_port = fork.port
    try:
        await cluster.add_agent("a1")
        target = f"127.0.0.1:{cluster.server.grpc_port}"
        bodies = [upload_message(f"{i}.png", png_bytes(), tasktype="YoloV5") for i in (1, 2)]
        async with grpc.aio.insecure_channel(target) as channel:
            reply = json.loads(
                await channel.stream_unary("/ImageUpload/UploadImages")(iter(bodies), timeout=10)
            )
        assert reply["saved_count"] == 2 and reply["req_id"].startswith("127.0.0.1_")
        await delivered(cluster, 2)
        folder = tmp_path / "fork" / reply["req_id"]
        assert sorted(fork.saved) == [folder / "127.0.0.1_1.txt", folder / "127.0.0.1_2.txt"]
    finally:
        fork.close()


async def test_the_split_task_manager_finds_the_local_gateway_and_a_wrong_token_is_unauthenticated(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    data_dir = cluster.settings.master.data_dir
    local = TaskManager(bind="127.0.0.1", port=0, data_dir=data_dir)  # no URL, no token
    wrong = TaskManager(cluster.http, "127.0.0.1", 0, api_token="esa_wrong", data_dir=data_dir)
    try:
        for manager in (local, wrong):
            await manager.start()
        picture = upload_message("a.png", png_bytes())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{local.port}") as channel:
            reply = json.loads(await channel.unary_unary("/ImageUpload/UploadImage")(picture))
        assert reply["filename"] == "127.0.0.1_1.png"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{wrong.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/ImageUpload/UploadImage")(picture)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(await cluster.master.journal.list_tasks(None, 10)) == 1
    finally:
        for manager in (local, wrong):
            await manager.stop()


async def test_an_agent_with_simulated_churn_leaves_and_rejoins_and_every_task_finishes(
    make_cluster,
) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.1)
    agent = await cluster.add_agent(
        "a1", disconnect_s=0.3, reconnect_s=0.2, emulate="rk3588", time_scale=2.0
    )
    replies = [await cluster.submit(f"t{i}", png_bytes(color=(i, 0, 0))) for i in range(12)]
    results = await cluster.wait([r.task_id for r in replies], limit_s=60)
    await until(lambda: agent.session_no >= 3)  # it left and came back, at least twice
    # a membership after a rejoin is undrained until its own next leave
    await until(lambda: agent.session_no >= 3 and agent.connected.is_set() and not agent.draining)
    # the only device: what comes after its rejoins runs on it too (its own drain ended)
    later = [await cluster.submit(f"u{i}", png_bytes(color=(0, i, 0))) for i in range(6)]
    results.update(await cluster.wait([r.task_id for r in later], limit_s=60))
    assert sorted(results) == sorted(r.task_id for r in replies + later)
    assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
