"""The journal's commit hooks (the payload log's seam) on a real SQLite journal: written right
before COMMIT, told when it happened, and told to discard when the batch failed."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from edgesched.errors import DiskFullError
from edgesched.journal.base import TaskRow
from edgesched.journal.sqlite import SQLiteJournal


def row(task_id: str) -> TaskRow:
    return TaskRow(
        id=task_id,
        client_id="c",
        idem_key=task_id,
        task_type="raw",
        filename="x",
        payload_path="",
        payload_size=0,
        submitted_ms=1,
    )


class RecordingHook:
    """A test double of the payload log: records the calls, can fail its next writes."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.calls: list[str] = []
        self.fail = 0
        self.visible_at_write: list[int] = []

    def before_commit(self) -> None:
        self.calls.append("before_commit")
        conn = sqlite3.connect(self.db)  # what another reader sees: nothing of this batch yet
        try:
            self.visible_at_write.append(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
        finally:
            conn.close()
        if self.fail:
            self.fail -= 1
            raise OSError(errno.ENOSPC, "No space left on device")

    def committed(self) -> None:
        self.calls.append("committed")

    def discard(self) -> None:
        self.calls.append("discard")


async def test_a_hook_writes_before_the_commit_and_a_failure_fails_the_batch(
    tmp_path: Path,
) -> None:
    db = tmp_path / "j.db"
    journal = SQLiteJournal(db)
    hook = RecordingHook(db)
    journal.add_hook(hook)
    staged: list[str] = []
    await journal.start()
    try:
        stored, duplicate = await journal.insert(row("a"), lambda: staged.append("a"))
        assert not duplicate and stored.id == "a"
        assert hook.calls == ["before_commit", "committed"]
        assert hook.visible_at_write == [0]  # the row was not committed when the hook wrote
        hook.calls.clear()
        hook.fail = 1
        with pytest.raises(DiskFullError):
            await journal.insert(row("b"), lambda: staged.append("b"))
        assert hook.calls[:2] == ["before_commit", "discard"], hook.calls
        assert "committed" not in hook.calls[:2]
        assert await journal.task_ids() == {"a"}  # nothing acknowledged without its entry
        await journal.flush()
        assert not journal.fault
        await journal.insert(row("c"))
        assert await journal.task_ids() == {"a", "c"}
    finally:
        await journal.close()


async def test_a_full_disk_that_the_reserve_frees_retries_the_batch_with_a_fresh_stage(
    tmp_path: Path,
) -> None:
    db = tmp_path / "j.db"
    freed: list[bool] = []

    def on_full() -> bool:
        freed.append(True)
        return True

    journal = SQLiteJournal(db, on_full=on_full)
    hook = RecordingHook(db)
    journal.add_hook(hook)
    staged: list[str] = []
    await journal.start()
    try:
        hook.fail = 1
        await journal.insert(row("a"), lambda: staged.append("a"))
        assert freed == [True]
        # staged, written, discarded; staged again by the retry, written, committed
        assert staged == ["a", "a"]
        assert hook.calls == ["before_commit", "discard", "before_commit", "committed"]
        assert await journal.task_ids() == {"a"}
    finally:
        await journal.close()
