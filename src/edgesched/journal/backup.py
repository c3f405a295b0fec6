"""An online backup of the SQLite journal, checked before it replaces the destination."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from edgesched.errors import DamagedJournalError, JournalError
from edgesched.journal.files import create_private
from edgesched.journal.integrity import integrity_problem


def backup(source: Path, dest: Path, pages: int = 256) -> int:
    """An online copy of the journal with SQLite's backup API (a running master goes on
    writing: each step reads a consistent snapshot). Written to ``dest`` (mode 0600) through a
    temporary name, checked with ``quick_check``; returns the number of tasks it holds."""
    if not source.is_file() or source.stat().st_size == 0:
        raise JournalError(f"no journal at {source} to back up")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    create_private(tmp)
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=pages)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            problem = integrity_problem(dst)
            if problem:
                raise DamagedJournalError(f"the backup of {source} fails quick_check: {problem}")
            tasks = int(dst.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JournalError(f"cannot back up {source}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        src.close()
    os.replace(tmp, dest)
    return tasks
