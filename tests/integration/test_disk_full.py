"""The master's data directory on a real 4 MiB tmpfs that fills while tasks run (issue 14, 1).

Every acknowledged task must end done once space returns (and after a restart): a journal write
that fails is kept and retried, new work is refused with the reason, nothing is deleted before
the journal records the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test needs root (a small tmpfs); CI runs as root")
        pytest.skip("the disk-full test needs root to mount a small tmpfs")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    need_root()
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Writes zeros until the file system says no more."""
    with open(path, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def checkpoint(db: Path) -> None:
    """Empties the WAL so that the next commit must grow it (and so meet the full disk)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def wait_until(predicate: Callable[[], bool], limit_s: float = 30.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("reserve_mb", [0.0, 0.5], ids=["no-reserve", "reserve"])
async def test_a_disk_that_fills_while_tasks_run_loses_no_acknowledged_task(
    tmp_path: Path, reserve_mb: float
) -> None:
    with small_tmpfs(tmp_path / "small") as mount:
        settings = master_settings(mount)
        settings.master.min_free_mb = 0.25
        settings.master.reserve_mb = reserve_mb
        cluster = InProcessCluster(tmp_path, settings)
        await cluster.start()
        data = mount / "master"
        filler = mount / "filler"
        try:
            await cluster.add_agent("a1")
            (device_id,) = cluster.master.core.devices
            cluster.master.drain(device_id, True)  # the tasks wait until the disk is full
            picture = png_bytes(32, 32)
            ids = [(await cluster.submit(f"k{i}", picture)).task_id for i in range(40)]
            checkpoint(data / "edgesched.db")
            fill(filler)
            cluster.master.drain(device_id, False)  # they run and end while nothing can be written
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                for i in range(40):  # refused at once, or once the journal meets the full disk
                    await cluster.submit(f"late{i}", picture)
                    await asyncio.sleep(0.05)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "space" in (refused.value.details() or "")
            # the tasks' ends meet the full disk (an attempt's start is not journaled)
            await wait_until(lambda: bool(cluster.master.space_problem()), 30)
            health = (await cluster.get("/healthz")).json()
            assert health["status"] != "ok" and "space" in health["reason"], health
            # payloads are released only once the journal has recorded their tasks' end
            paths = dict(
                sqlite3.connect(data / "edgesched.db").execute(
                    "SELECT id, payload_path FROM tasks WHERE state != 'done'"
                )
            )
            plog = cluster.master.plog
            for task_id in ids:
                if task_id in paths:
                    assert task_id in plog.where, task_id
                    assert plog.read(paths[task_id]) == picture, task_id
            filler.unlink()  # space returns: the master resumes by itself
            await wait_until(lambda: not cluster.master.journal.fault, 30)
            health = {}
            for _ in range(100):
                health = (await cluster.get("/healthz")).json()
                if health["status"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert health["status"] == "ok", health
            results = await cluster.wait(ids, 60)
            assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
            again = await cluster.submit("after", picture)
            assert again.task_id
        finally:
            await cluster.close()
        # and a restart finds every acknowledged task done
        restarted = InProcessCluster(tmp_path, settings)
        await restarted.start()
        try:
            counts = await restarted.master.journal.counts()
            assert counts.get("dead", 0) == 0, counts
            results = await restarted.wait(ids, 30)
            assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
        finally:
            await restarted.close()


async def test_a_master_starts_on_a_full_disk_and_says_so(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        settings = master_settings(mount)
        settings.master.min_free_mb = 0.25
        settings.master.reserve_mb = 0.25
        cluster = InProcessCluster(tmp_path, settings)
        await cluster.start()
        ids = [(await cluster.submit(f"k{i}", png_bytes(16, 16))).task_id for i in range(5)]
        await cluster.close()
        (mount / "master" / "endpoints.json").unlink()
        fill(mount / "filler")
        again = InProcessCluster(tmp_path, settings)
        await again.start()  # no traceback: it starts, refuses work and says why
        try:
            assert (mount / "master" / "endpoints.json").is_file()
            health = (await again.get("/healthz")).json()
            assert health["status"] != "ok" and "space" in health["reason"], health
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await again.submit("new", png_bytes(16, 16))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            (mount / "filler").unlink()
            await again.add_agent("a1")
            results = await again.wait(ids, 60)
            assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
        finally:
            await again.close()


async def test_an_upload_that_would_leave_less_than_min_free_mb_is_refused(
    tmp_path: Path,
) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    settings.master.min_free_mb = 1e12  # more than any disk here has
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.submit("k", png_bytes(8, 8))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "no space left" in (refused.value.details() or "")
        assert "master.min_free_mb" in (refused.value.details() or "")
        assert not list((tmp_path / "master").rglob("*.png"))
        health = (await cluster.get("/healthz")).json()
        assert health["status"] == "degraded" and "min_free_mb" in health["reason"]
    finally:
        await cluster.close()
