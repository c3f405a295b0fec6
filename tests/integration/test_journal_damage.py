"""A damaged journal is refused at start, naming the file and the finding; --repair mends it
(issue 14, finding 3). The copies are taken from a running master, as after a SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from edgesched.errors import DamagedJournalError
from edgesched.journal.backup import backup
from edgesched.master.payloadlog import PayloadLog
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


async def test_a_payload_that_is_damaged_is_reported_not_recovered(tmp_path: Path) -> None:
    copy, ids = await crashed_copy(tmp_path)
    db = copy / "master" / "edgesched.db"
    os.unlink(f"{db}-wal")
    live = PayloadLog(copy / "master").open()
    victim = live[ids[0]]
    segment = copy / "master" / "payloads" / victim.segment
    with open(segment, "r+b") as handle:  # the last byte of its picture
        handle.seek(next(e.offset for e in live.values() if e.offset > victim.offset) - 1)
        handle.write(b"\xff")
    settings = master_settings(copy)
    report = "\n".join(await repair(settings))
    assert f"could not recover task {ids[0]}" in report and "CRC" in report, report
    assert "re-journaled 59 acknowledged tasks" in report, report
    assert ids[0] not in PayloadLog(copy / "master").open()  # released, not left to refuse


async def test_an_older_masters_intake_record_is_still_honoured(tmp_path: Path) -> None:
    """Intake record files (one per task, as masters before the payload log wrote them) are
    read: a task they hold that the journal lacks refuses the start; --repair brings it back."""
    copy, ids = await crashed_copy(tmp_path)
    data = copy / "master"
    settings = master_settings(copy)
    settings.master.reserve_mb = 0
    cluster = InProcessCluster(copy, settings)
    await cluster.start()
    try:
        row = await cluster.master.journal.get(ids[0])
        assert row is not None
    finally:
        await cluster.close()
    picture = data / "upload" / "c" / f"{row.id}old.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(png_bytes(8, 8))
    record = {name: getattr(row, name) for name in ("client_id", "task_type", "filename")}
    record |= {"id": row.id + "old", "idem_key": "old-key", "payload_path": str(picture)}
    record |= {"payload_size": picture.stat().st_size, "submitted_ms": 1, "_commit": 1}
    (data / "intake").mkdir(exist_ok=True)
    (data / "intake" / f"{row.id}old.json").write_text(json.dumps(record))
    refused = MasterServer(settings)
    with pytest.raises(DamagedJournalError, match="lacks 1 acknowledged"):
        await refused.start()
    await refused.stop()
    report = "\n".join(await repair(settings))
    assert "re-journaled 1 acknowledged tasks" in report, report
    again = InProcessCluster(copy, settings)
    await again.start()
    try:
        await again.add_agent("a1")
        results = await again.wait([row.id + "old", *ids], 60)
        assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
        await again.master.journal.flush()
    finally:
        await again.close()
    assert not list((data / "intake").glob("*.json"))  # removed with its task's end


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


async def test_retention_prunes_rows_and_a_restart_finds_nothing_missing(
    tmp_path: Path,
) -> None:
    settings = master_settings(tmp_path)
    settings.master.reserve_mb = 0
    settings.master.keep_upload = True  # seed uploads only: a native payload has no file
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    data = Path(settings.master.data_dir)
    try:
        await cluster.add_agent("a1")
        ids = [(await cluster.submit(f"k{i}", png_bytes(8, 8))).task_id for i in range(5)]
        await cluster.wait(ids)
        await cluster.master.journal.flush()
        assert not list((data / "upload").rglob("*.png"))  # in the payload log, not files
        assert not cluster.master.plog.where  # released with the tasks' end
        settings.master.retention_s = 0
        assert cluster.server is not None
        assert await cluster.server.prune() == 5
    finally:
        await cluster.close()
    assert PayloadLog(data).open() == {}  # every entry ended
    again = InProcessCluster(tmp_path, settings)
    await again.start()
    await again.close()
