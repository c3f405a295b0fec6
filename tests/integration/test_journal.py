"""The SQLite journal for real, in a temp dir; and the in-memory one behaving the same."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edgesched.errors import JournalError
from edgesched.inference.labels import Detection
from edgesched.journal import MemoryJournal, SQLiteJournal, TaskRow
from edgesched.kinds import TaskState


def row(task_id: str, key: str, submitted: int = 1) -> TaskRow:
    return TaskRow(
        id=task_id,
        client_id="c",
        idem_key=key,
        task_type="layout",
        filename="a.png",
        payload_path="/tmp/x",
        payload_size=3,
        submitted_ms=submitted,
    )


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def journal(request, tmp_path: Path):
    if request.param == "postgres":
        from edgesched.journal.postgres import PostgresJournal

        j: Any = PostgresJournal(request.getfixturevalue("pg_dsn"))
    else:
        j = SQLiteJournal(tmp_path / "j.db") if request.param == "sqlite" else MemoryJournal()
    await j.start()
    yield j
    await j.close()


async def test_insert_then_the_same_key_returns_the_first_row(journal) -> None:
    stored, duplicate = await journal.insert(row("t1", "k"))
    assert not duplicate and stored.id == "t1"
    again, duplicate = await journal.insert(row("t2", "k"))
    assert duplicate and again.id == "t1"
    assert await journal.get("t2") is None


async def test_updates_apply_in_order_and_unfinished_skips_final_states(journal) -> None:
    for i in range(3):
        await journal.insert(row(f"t{i}", f"k{i}", submitted=i))
    journal.update("t0", {"state": "assigned", "attempt": 1})
    journal.update("t0", {"state": "done", "label": "0 1 2 3 4 0.5\n", "timings": {"a": 1.5}})
    journal.update("t1", {"state": "dead", "errors": [{"kind": "bad_input"}], "error": "x"})
    await journal.flush()
    done = await journal.get("t0")
    assert done.state == "done" and done.attempt == 1 and done.timings == {"a": 1.5}
    assert [r.id for r in await journal.unfinished()] == ["t2"]
    assert [r.id for r in await journal.list_tasks("dead", 10)] == ["t1"]
    assert [r.id for r in await journal.list_tasks(None, 2)] == ["t2", "t1"]
    assert await journal.counts() == {"done": 1, "dead": 1, "queued": 1}


async def test_counters_increase_and_respect_a_floor(journal) -> None:
    assert await journal.next_counter("10.0.0.1") == 1
    assert await journal.next_counter("10.0.0.1") == 2
    assert await journal.next_counter("10.0.0.1", floor=7) == 8


async def test_a_reopened_journal_has_everything_that_was_acknowledged(tmp_path: Path) -> None:
    first = SQLiteJournal(tmp_path / "j.db")
    await first.start()
    await first.insert(row("t1", "k1"))
    first.update("t1", {"state": "running"})
    await first.close()
    second = SQLiteJournal(tmp_path / "j.db", durability="full")
    await second.start()
    try:
        (unfinished,) = await second.unfinished()
        assert unfinished.id == "t1" and unfinished.state == "running"
        mode = sqlite3.connect(tmp_path / "j.db").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await second.close()


async def test_a_journal_from_a_newer_edgesched_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        await SQLiteJournal(path).start()


async def test_one_bad_operation_does_not_sink_the_rest_of_its_group_commit(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.start()
    try:
        journal.update("t-missing", {"no_such_column": 1})  # fails inside the batch
        stored, _ = await journal.insert(row("t1", "k1"))
        assert (await journal.get("t1")) is not None and stored.id == "t1"
    finally:
        await journal.close()


async def test_a_commit_that_meets_a_full_database_is_kept_and_retried(tmp_path: Path) -> None:
    """SQLite's max_page_count gives SQLITE_FULL as a full disk does (no root needed)."""
    from edgesched.errors import DiskFullError

    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.start()
    try:
        await journal.insert(row("t1", "k1"))

        def cap(conn: sqlite3.Connection) -> int:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages}")
            return pages

        await journal._submit(cap)
        removed: list[str] = []
        journal.update("t1", {"state": "done", "label": "x" * 200_000})
        journal.after_commit(lambda: removed.append("payload"))
        flushed = asyncio.ensure_future(journal.flush())
        with pytest.raises(DiskFullError):
            await journal.insert(row("t2", "k2"))
        assert "no space left" in journal.fault
        assert not flushed.done() and removed == []  # nothing acted on before it is durable
        before = await journal.get("t1")
        assert before is not None and before.state == "queued"  # reads still answer

        def uncap(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1073741823")

        await journal._submit(uncap)
        await asyncio.wait_for(flushed, 10)  # the held update went through by itself
        assert journal.fault == "" and removed == ["payload"]
        done = await journal.get("t1")
        assert done is not None and done.state == "done" and len(done.label) == 200_000
    finally:
        await journal.close()


async def test_a_failed_insert_alone_does_not_leave_the_journal_faulted(tmp_path: Path) -> None:
    """Nothing held after the failure: the journal still finds out when space returns."""
    from edgesched.errors import DiskFullError

    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.start()
    try:

        def cap(conn: sqlite3.Connection) -> None:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await journal._submit(cap)
        big = row("t1", "k1")
        big.metadata = {"pad": "x" * 200_000}
        with pytest.raises(DiskFullError):
            await journal.insert(big)
        assert journal.fault

        def uncap(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1073741823")

        await journal._submit(uncap)
        for _ in range(100):
            if not journal.fault:
                break
            await asyncio.sleep(0.05)
        assert journal.fault == ""
        await journal.insert(big)
    finally:
        await journal.close()


async def test_detections_are_typed_in_and_out_and_stored_as_before(journal, tmp_path) -> None:
    d = Detection(class_id=2, x1=1, y1=2, x2=30, y2=40, confidence=0.875, class_name="table")
    await journal.insert(row("t1", "k1"))
    journal.update("t1", {"state": TaskState.DONE, "detections": [d]})
    await journal.flush()
    stored = await journal.get("t1")
    assert stored.detections == [d] and stored.state == "done"
    if isinstance(journal, SQLiteJournal):  # the column holds the same JSON as before issue 15
        (column,) = (
            sqlite3.connect(tmp_path / "j.db")
            .execute("SELECT detections FROM tasks WHERE id = 't1'")
            .fetchone()
        )
        assert column == (
            '[{"class_id":2,"class_name":"table","x1":1,"y1":2,"x2":30,"y2":40,"confidence":0.875}]'
        )
