"""The payload log through a real master (issue 16, item 3): a restarted master serves a task
whose payload is only in the log, segments go once their tasks end, a dead task's payload
survives for an operator's retry."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from edgesched.master.payloadformat import parse_ref
from edgesched.master.payloadlog import PayloadLog
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2


async def wait_until(predicate: Callable[[], bool], limit_s: float = 30.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def segments(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "payloads").glob("seg-*.log"))


async def test_a_restarted_master_sends_a_payload_it_reads_from_the_log(tmp_path: Path) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:  # no agent: the tasks wait, journaled with their payload in the log only
        ids = [(await cluster.submit(f"k{i}", png_bytes(16, 16 + i))).task_id for i in range(5)]
        rows = [await cluster.master.journal.get(task_id) for task_id in ids]
        assert all(r is not None and parse_ref(r.payload_path) for r in rows), rows
        assert not (tmp_path / "master" / "upload").exists() or not list(
            (tmp_path / "master" / "upload").rglob("*.*")
        )
        assert all(r is not None and r.payload_sha256 == "" for r in rows)  # no hash: a CRC
    finally:
        await cluster.close()
    again = InProcessCluster(tmp_path, settings)
    await again.start()
    try:
        assert all(again.master.cached_payload(task_id) is None for task_id in ids)
        await again.add_agent("a1")
        results = await again.wait(ids, 60)
        assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
    finally:
        await again.close()


async def test_a_damaged_entry_ends_its_task_as_unreadable(tmp_path: Path) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:
        task_id = (await cluster.submit("k", png_bytes(16, 16))).task_id
        row = await cluster.master.journal.get(task_id)
    finally:
        await cluster.close()
    assert row is not None
    ref = parse_ref(row.payload_path)
    assert ref is not None
    segment = tmp_path / "master" / "payloads" / ref.segment
    with open(segment, "r+b") as handle:  # the picture's last byte, as a bad disk would
        handle.seek(os.path.getsize(segment) - 1)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\x00" if last != b"\x00" else b"\x01")
    again = InProcessCluster(tmp_path, settings)
    await again.start()
    try:
        await again.add_agent("a1")
        result = (await again.wait([task_id], 60))[task_id]
        assert result.state == common_pb2.TASK_STATE_DEAD
        assert "payload unreadable" in result.error and "CRC" in result.error, result.error
    finally:
        await again.close()


async def test_segments_are_deleted_once_their_tasks_end(tmp_path: Path) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    settings.master.payload_segment_mb = 1 / 1024  # 1 KiB: about one task per segment
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    data = tmp_path / "master"
    try:
        ids = [(await cluster.submit(f"k{i}", png_bytes(32, 32))).task_id for i in range(12)]
        assert len(segments(data)) >= 6
        await cluster.add_agent("a1")
        results = await cluster.wait(ids, 60)
        assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
        await cluster.master.journal.flush()
        await wait_until(lambda: not cluster.master.plog.where)
        assert len(segments(data)) == 1  # the active one
    finally:
        await cluster.close()
    assert PayloadLog(data).open() == {}


async def test_a_dead_tasks_payload_is_kept_and_it_can_be_retried(tmp_path: Path) -> None:
    settings = master_settings(tmp_path, no_device_ttl_s=0.3)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    data = tmp_path / "master"
    picture = png_bytes(24, 24)
    try:  # no device can run it: dead once no_device_ttl_s passed
        task_id = (await cluster.submit("k", picture)).task_id
        result = (await cluster.wait([task_id], 30))[task_id]
        assert result.state == common_pb2.TASK_STATE_DEAD
        await cluster.master.journal.flush()
        copy = data / "dead" / task_id
        await wait_until(lambda: task_id not in cluster.master.plog.where)
        assert copy.read_bytes() == picture
        assert (copy.stat().st_mode & 0o777) == 0o600
        row = await cluster.master.journal.get(task_id)
        assert row is not None and row.payload_path == str(copy)
    finally:
        await cluster.close()
    again = InProcessCluster(tmp_path, settings)  # the copy outlives a restart
    await again.start()
    try:
        assert PayloadLog(data).open() == {}  # the log keeps nothing for it
        await again.add_agent("a1")
        await again.master.retry(task_id)
        result = (await again.wait([task_id], 60))[task_id]
        assert result.state == common_pb2.TASK_STATE_DONE
        await again.master.journal.flush()
        await wait_until(lambda: not copy.exists())  # done: its copy goes
    finally:
        await again.close()


async def test_a_repeated_submission_writes_no_entry(tmp_path: Path) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:
        first = await cluster.submit("same-key", png_bytes(16, 16))
        again = await cluster.submit("same-key", png_bytes(16, 16))  # a client's retry
        assert again.task_id == first.task_id and again.duplicate
        assert set(cluster.master.plog.where) == {first.task_id}
    finally:
        await cluster.close()
    assert set(PayloadLog(tmp_path / "master").open()) == {first.task_id}
