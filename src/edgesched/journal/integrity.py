"""The journal's start-up checks and the commit side record they compare against.

The side file (``<journal>-commits``) holds how many write transactions were committed; a
journal holding fewer (a lost or cut write-ahead log), or missing while the record says it held
some, is damaged: the master refuses it rather than start without acknowledged tasks.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgesched.errors import DamagedJournalError

#: the counter every committed write transaction increments; the side file holds its last value
COMMITS = "journal:commits"


def commit_record_path(path: Path) -> Path:
    """The side file holding how many write transactions the journal has committed."""
    return path.with_name(path.name + "-commits")


def read_commit_record(path: Path) -> int:
    """The side file's count; -1 when there is none (a new journal, or one made before it)."""
    try:
        text = commit_record_path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return -1
    return int(text) if text.isdigit() else 0


def integrity_problem(conn: sqlite3.Connection) -> str:
    """``PRAGMA quick_check``'s first findings, or "" when the database is sound."""
    lines = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    return "" if lines == ["ok"] else "; ".join(lines)


def check_present(path: Path, recorded: int, size: int) -> None:
    """Before opening: a journal the side record says held commits must not be missing or
    empty (``size`` -1 when missing)."""
    if recorded > 0 and size <= 0:
        state = "missing" if size < 0 else "empty (0 bytes)"
        raise DamagedJournalError(
            f"journal {path} is {state}, but {commit_record_path(path).name} "
            f"records {recorded} committed transactions: the journal was lost and "
            "acknowledged tasks may be missing; restore a backup or run "
            "`edgesched master --repair` (docs/operations.md)"
        )


def check_sound(conn: sqlite3.Connection, path: Path) -> None:
    """The database passes ``PRAGMA quick_check``."""
    problem = integrity_problem(conn)
    if problem:
        raise DamagedJournalError(
            f"journal {path} fails its integrity check (PRAGMA quick_check: "
            f"{problem}); restore a backup or run `edgesched master --repair` "
            "(docs/operations.md)"
        )


def check_sequence(path: Path, sequence: int, recorded: int) -> None:
    """The journal holds at least as many commits as the side record says it made."""
    if sequence < recorded:
        raise DamagedJournalError(
            f"journal {path} holds {sequence} committed transactions, but "
            f"{commit_record_path(path).name} records {recorded}: the last "
            f"{recorded - sequence} are missing (its write-ahead log "
            f"{path.name}-wal was cut short or deleted) and acknowledged tasks may be "
            "lost; restore a backup or run `edgesched master --repair` (docs/operations.md)"
        )
