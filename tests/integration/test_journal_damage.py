"""A damaged journal is refused at start, naming the file and the finding; --repair mends it
(issue 14, finding 3). The copies are taken from a running master, as after a SIGKILL."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from edgesched.errors import DamagedJournalError
from edgesched.journal.backup import backup
from edgesched.master.repair import repair
from edgesched.master.server import MasterServer
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2

TASKS = 60


async def crashed_copy(tmp_path: Path) -> tuple[Path, list[str]]:
    """A master's data directory copied while it runs (its journal's WAL not checkpointed),
    holding TASKS acknowledged tasks, put back in its place once the master stopped (as if it
    had been killed then); returns the root and the task ids."""
    live = master_settings(tmp_path / "live")
    live.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path / "live", live)
    await cluster.start()
    try:
        ids = [(await cluster.submit(f"k{i}", png_bytes(8, 8))).task_id for i in range(TASKS)]
        await cluster.master.journal.flush()
        shutil.copytree(tmp_path / "live" / "master", tmp_path / "snapshot")
    finally:
        await cluster.close()
    shutil.rmtree(tmp_path / "live" / "master")
    (tmp_path / "snapshot").rename(tmp_path / "live" / "master")
    return tmp_path / "live", ids


def corrupt_a_page(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db, "r+b") as handle:  # page 3 onwards: the tasks table's pages
        handle.seek(2 * 4096)
        handle.write(b"\xa5" * 4096)


DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "wal-cut": (
        lambda db: os.truncate(f"{db}-wal", os.path.getsize(f"{db}-wal") // 8),
        "edgesched.db-wal was cut short or deleted",
    ),
    "wal-deleted": (lambda db: os.unlink(f"{db}-wal"), "edgesched.db-wal was cut short or deleted"),
    "db-empty": (lambda db: os.truncate(db, 0), "is empty (0 bytes)"),
    "page-corrupt": (corrupt_a_page, "edgesched.db"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
async def test_a_damaged_journal_is_refused_then_repaired(tmp_path: Path, case: str) -> None:
    copy, ids = await crashed_copy(tmp_path)
    db = copy / "master" / "edgesched.db"
    damage, finding = DAMAGE[case]
    damage(db)
    settings = master_settings(copy)
    settings.master.reserve_mb = 0
    refused = MasterServer(settings)
    with pytest.raises(DamagedJournalError) as exc:
        await refused.start()
    message = str(exc.value)
    assert str(db) in message and finding in message and "--repair" in message, message
    await refused.stop()

    report = await repair(settings)
    text = "\n".join(report)
    assert "repaired" in text, text
    cluster = InProcessCluster(copy, settings)
    await cluster.start()  # accepted now
    try:
        journaled = await cluster.master.journal.task_ids()
        if case == "page-corrupt":  # what the bad page held is gone unless its payload says
            assert "damaged" in text and "moved aside" in text, text
        assert set(ids) <= journaled, (len(set(ids) - journaled), text)
        await cluster.add_agent("a1")
        results = await cluster.wait(ids, 60)
        states = {r.state for r in results.values()}
        assert states == {common_pb2.TASK_STATE_DONE}, text
    finally:
        await cluster.close()


async def test_a_payload_that_is_gone_is_reported_not_recovered(tmp_path: Path) -> None:
    copy, ids = await crashed_copy(tmp_path)
    db = copy / "master" / "edgesched.db"
    os.unlink(f"{db}-wal")
    victim = next((copy / "master" / "upload").rglob(f"{ids[0]}.png"))
    victim.unlink()
    settings = master_settings(copy)
    report = "\n".join(await repair(settings))
    assert f"could not recover task {ids[0]}" in report and "unreadable" in report, report
    assert (copy / "master" / "intake" / "lost" / f"{ids[0]}.json").is_file()


async def test_an_online_backup_while_the_master_writes(tmp_path: Path) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:
        for i in range(20):
            await cluster.submit(f"k{i}", png_bytes(8, 8))
        dest = tmp_path / "backups" / "journal.db"
        tasks = backup(Path(settings.master.data_dir) / "edgesched.db", dest)
        await cluster.submit("after", png_bytes(8, 8))  # the master writes on
    finally:
        await cluster.close()
    assert tasks == 20
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 20
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


async def test_data_files_are_0600_and_folders_0700(tmp_path: Path) -> None:
    data = tmp_path / "master"
    (data / "intake" / "old").mkdir(parents=True, mode=0o755)  # as an older version left them
    os.chmod(data, 0o755)
    os.chmod(data / "intake", 0o755)
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0.5
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:
        await cluster.submit("k", png_bytes(8, 8))
        await cluster.master.journal.flush()
        for path in [data, *data.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    finally:
        await cluster.close()


async def test_retention_takes_records_with_rows_and_a_restart_finds_nothing_missing(
    tmp_path: Path,
) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    settings.master.keep_upload = True  # payloads stay after the end: only retention removes them
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    data = Path(settings.master.data_dir)
    try:
        await cluster.add_agent("a1")
        ids = [(await cluster.submit(f"k{i}", png_bytes(8, 8))).task_id for i in range(5)]
        await cluster.wait(ids)
        await cluster.master.journal.flush()
        assert not list((data / "intake").glob("*.json"))  # gone with the tasks' end
        assert len(list((data / "upload").rglob("*.png"))) == 5
        settings.master.retention_s = 0
        assert cluster.server is not None
        assert await cluster.server.prune() == 5
        assert not list((data / "upload").rglob("*.png"))
    finally:
        await cluster.close()
    again = InProcessCluster(tmp_path, settings)
    await again.start()
    await again.close()
