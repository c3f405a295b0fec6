"""``edgesched master --repair``: a journal refused at start is mended from what the disk holds.

1. A journal that cannot be opened or fails ``quick_check`` is moved aside (with its WAL) and
   every row that can still be read from it is copied into a new one.
2. Every live payload-log entry whose task the journal lacks (a WAL cut short or deleted, an
   emptied journal) is journaled again from the entry as a queued task, if its payload reads
   back with its CRC (a seed upload: its file, with its checksum); the others are released and
   named in the report. An older master's intake records are treated the same way (the ones
   that cannot be are moved to ``intake/lost/``).
3. Unfinished tasks whose payload is gone are named (they will end dead: nothing to run).
4. The side file of committed transactions is reset to what the journal now holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgesched.config import Settings
from edgesched.core.state import TaskState
from edgesched.errors import ConfigError, PayloadError
from edgesched.journal.base import TaskRow
from edgesched.journal.integrity import COMMITS, integrity_problem, read_commit_record
from edgesched.journal.sqlite import SQLiteJournal
from edgesched.master.payloadformat import parse_ref, row_of
from edgesched.master.payloadlog import PayloadLog
from edgesched.master.storage import INTAKE, read_record, records

#: rows read per step from a damaged table (a bad page loses its step, not the table)
SALVAGE_STEP = 1000


def open_problem(db: Path) -> str:
    """Why ``db`` cannot be used as it is ("" when it opens and passes quick_check)."""
    if not db.exists() or db.stat().st_size == 0:
        return ""
    try:
        conn = sqlite3.connect(db)
        try:
            return integrity_problem(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)


def move_aside(db: Path) -> Path:
    """``edgesched.db`` (and its -wal, -shm) → ``edgesched.db.damaged-<unix time>``."""
    aside = db.with_name(f"{db.name}.damaged-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").rename(f"{aside}{suffix}")
    return aside


def salvage(db: Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every row still readable from a damaged journal, per table; and what could not be."""
    found: dict[str, list[dict[str, Any]]] = {"tasks": [], "agents": [], "counters": []}
    problems: list[str] = []
    try:
        conn = sqlite3.connect(db)
    except sqlite3.DatabaseError as exc:
        return found, [f"{db.name} cannot be opened: {exc}"]
    conn.row_factory = sqlite3.Row
    try:
        for table in found:
            try:
                top = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
            except sqlite3.DatabaseError as exc:
                problems.append(f"table {table}: unreadable ({exc})")
                continue
            for start in range(0, int(top) + 1, SALVAGE_STEP):
                try:
                    rows = conn.execute(
                        f"SELECT * FROM {table} WHERE rowid >= ? AND rowid < ?",
                        (start, start + SALVAGE_STEP),
                    ).fetchall()
                except sqlite3.DatabaseError as exc:
                    problems.append(
                        f"table {table}: rows {start}..{start + SALVAGE_STEP - 1} lost ({exc})"
                    )
                    continue
                found[table].extend(dict(r) for r in rows)
    finally:
        conn.close()
    found["counters"] = [c for c in found["counters"] if c.get("name") != COMMITS]
    return found, problems


def payload_matches(plog: PayloadLog, row: TaskRow) -> str:
    """ "" when the task's payload reads back as it was submitted, else what is wrong: a log
    entry's CRC, a file's SHA-256 (when the row has one)."""
    try:
        data = plog.read(row.payload_path)
    except PayloadError as exc:
        return f"{exc} (unreadable)"
    if parse_ref(row.payload_path) is not None:
        return ""
    if row.payload_sha256 and hashlib.sha256(data).hexdigest() != row.payload_sha256:
        return f"payload {row.payload_path} does not match its checksum"
    return ""


def queued_again(row: TaskRow) -> TaskRow:
    """The submitted task, queued as new: what it did before the loss is not known."""
    row.state = TaskState.QUEUED.value
    row.attempt = row.failures = 0
    row.device_id = row.device_type = ""
    row.finished_ms = 0
    row.label, row.detections, row.timings, row.error = "", [], {}, ""
    row.errors = [
        {"kind": "repaired", "message": "journaled again by --repair from its intake record"}
    ]
    row.delivery = "pending" if row.origin == "seed" else ""
    return row


async def repair(settings: Settings) -> list[str]:
    """Mends the journal of ``settings.master.data_dir``; returns the report, line by line."""
    m = settings.master
    if m.journal:
        raise ConfigError(
            "--repair mends the SQLite journal and its payload log; a PostgreSQL journal is "
            "mended with PostgreSQL's own tools (backups, point-in-time recovery)"
        )
    data_dir = Path(m.data_dir)
    db = data_dir / "edgesched.db"
    report: list[str] = []
    recorded = read_commit_record(db)
    salvaged: dict[str, list[dict[str, Any]]] = {}
    problem = await asyncio.to_thread(open_problem, db)
    if problem:
        aside = await asyncio.to_thread(move_aside, db)
        report.append(f"{db} is damaged ({problem}): moved aside to {aside.name}")
        salvaged, lost = await asyncio.to_thread(salvage, aside)
        report.extend(f"could not salvage {what}" for what in lost)
    elif not db.exists() or db.stat().st_size == 0:
        report.append(f"{db} is missing or empty: a new journal is made")
    journal = SQLiteJournal(db, m.durability, verify=False)
    await journal.start()
    try:
        for table, rows in salvaged.items():
            if rows:
                added = await journal.import_rows(table, rows)
                report.append(f"salvaged {added} of {len(rows)} {table} rows from the damaged copy")
        if recorded > journal.sequence:
            report.append(
                f"{db.name} holds {journal.sequence} committed transactions of the "
                f"{recorded} recorded: {recorded - journal.sequence} were lost (WAL cut short or "
                "deleted, or an older copy restored)"
            )
        known = await journal.task_ids()
        plog = PayloadLog(data_dir, m.payload_segment_mb, m.durability == "full")
        try:
            recovered = await _from_log(journal, plog, known, report)
            recovered += await _from_records(journal, plog, data_dir, known, report)
            report.append(
                f"re-journaled {recovered} acknowledged tasks from their payloads, as queued"
            )
            for row in await journal.unfinished():
                if not await asyncio.to_thread(plog.present, row.payload_path):
                    report.append(
                        f"task {row.id} ({row.filename}) is unfinished but its payload "
                        f"{row.payload_path} is gone: it will end dead"
                    )
            await journal.flush()
        finally:
            await asyncio.to_thread(plog.close)  # the releases' end entries are written
    finally:
        await journal.close()
    report.append(f"{db} repaired: {len(known)} tasks journaled")
    return report


async def _from_log(
    journal: SQLiteJournal, plog: PayloadLog, known: set[str], report: list[str]
) -> int:
    """Journals again the tasks of live log entries the journal lacks; returns how many."""
    recovered = 0
    live = await asyncio.to_thread(plog.open)
    for task_id, entry in live.items():
        if task_id in known:
            continue
        row = row_of(entry.record)
        why = "its entry's record is unreadable" if row is None else ""
        if row is not None:
            why = await asyncio.to_thread(payload_matches, plog, row)
        if row is None or why:
            plog.release([task_id])
            report.append(f"could not recover task {task_id}: {why} (its log entry is released)")
            continue
        stored, duplicate = await journal.insert(queued_again(row))
        if duplicate:  # a repeated submission: the journal holds its first task
            plog.release([task_id])
        else:
            recovered += 1
        known.add(stored.id)
    return recovered


async def _from_records(
    journal: SQLiteJournal, plog: PayloadLog, data_dir: Path, known: set[str], report: list[str]
) -> int:
    """The same for an older master's intake records; returns how many."""
    recovered = 0
    lost_dir = data_dir / INTAKE / "lost"
    for path in await asyncio.to_thread(records, data_dir):
        if path.stem in known:
            continue
        row = await asyncio.to_thread(read_record, path)
        why = "its intake record is unreadable" if row is None else ""
        if row is not None:
            why = await asyncio.to_thread(payload_matches, plog, row)
        if row is None or why:
            lost_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.rename(lost_dir / path.name)
            report.append(f"could not recover task {path.stem}: {why} (record kept in {lost_dir})")
            continue
        stored, duplicate = await journal.insert(queued_again(row))
        if not duplicate:
            recovered += 1
        known.add(stored.id)
    return recovered
