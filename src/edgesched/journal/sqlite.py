"""The SQLite journal: WAL mode, one writer thread (``writer``), group commit.

Every call becomes an operation on the writer's queue. The writer thread takes whatever has
queued, runs it in one transaction and commits once (group commit: never waiting on a timer),
then resolves the callers' futures. So a submission is on disk when ``insert`` returns, updates
stay in order, and the event loop never waits on SQLite or an fsync. This module opens and checks
the database (``schema``, ``integrity``) and builds the operations.

Durability: "normal" (``synchronous=NORMAL``) survives a crash of the process; "full"
(``synchronous=FULL``) also survives a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgesched.errors import DamagedJournalError, DiskFullError, JournalError
from edgesched.journal.base import Before, CommitHook, TaskRow
from edgesched.journal.files import create_private, private_dir
from edgesched.journal.integrity import (
    COMMITS,
    check_present,
    check_sequence,
    check_sound,
    read_commit_record,
)
from edgesched.journal.schema import FINAL, decode_row, encode_row, encode_values, migrate
from edgesched.journal.writer import Op, Writer, is_disk_full, noop

log = logging.getLogger(__name__)


class SQLiteJournal:
    """The ``Journal`` on SQLite (WAL): one writer thread, group commit, updates held and
    retried on a full disk, the commit side record kept current. Owns its ``Writer`` (the
    connection, the writer thread and its queue, the side record's file) and opens and checks
    the database before handing it over. It may not know what a task
    means beyond its row (no core, no network, no process), nor delete a payload (the master
    does, through ``after_commit``)."""

    def __init__(
        self,
        path: str | Path,
        durability: str = "normal",
        on_full: Callable[[], bool] | None = None,
        verify: bool = True,
    ) -> None:
        self.path = Path(path)
        self.verify = verify  #: refuse to open a journal that misses work (False: --repair)
        self.writer = Writer(self.path, durability, on_full)
        #: what the side file said at open, before it was brought up to date (-1: no side file)
        self.recorded = -1

    # ---- the writer's state (read by the master, set by the checks at open) -------------

    @property
    def durability(self) -> str:
        return self.writer.durability

    @property
    def on_full(self) -> Callable[[], bool] | None:
        return self.writer.on_full

    @on_full.setter
    def on_full(self, callback: Callable[[], bool] | None) -> None:
        self.writer.on_full = callback

    @property
    def fault(self) -> str:
        """Why the journal cannot write now ("" when it can)."""
        return self.writer.fault

    @fault.setter
    def fault(self, value: str) -> None:
        self.writer.fault = value

    @property
    def sequence(self) -> int:
        """Write transactions committed over the journal's life."""
        return self.writer.sequence

    @sequence.setter
    def sequence(self, value: int) -> None:
        self.writer.sequence = value

    @property
    def held(self) -> int:
        """Operations waiting for a commit that failed to be retried."""
        return self.writer.held

    @property
    def commits(self) -> int:
        """Transactions committed (group commits)."""
        return self.writer.commits

    @property
    def ops(self) -> int:
        """Operations committed."""
        return self.writer.ops

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self.writer.start()

    def _open(self) -> None:
        private_dir(self.path.parent)
        recorded = self.recorded = read_commit_record(self.path)
        size = self.path.stat().st_size if self.path.exists() else -1
        if self.verify:
            check_present(self.path, recorded, size)
        try:
            create_private(self.path)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            self._prepare(conn, recorded)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_disk_full(exc):
                raise DiskFullError(
                    f"journal {self.path}: no space left on device ({exc})"
                ) from exc
            raise DamagedJournalError(
                f"journal {self.path} is damaged: {exc}; restore a backup or run "
                "`edgesched master --repair` (docs/operations.md)"
            ) from exc
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):  # SQLite gives them the journal's mode; be sure
            with contextlib.suppress(OSError):
                os.chmod(self.path.with_name(self.path.name + suffix), 0o600)
        self.writer.open(conn)

    def _prepare(self, conn: sqlite3.Connection, recorded: int) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        if self.verify:
            check_sound(conn, self.path)
        migrate(conn, self.path)
        found = conn.execute("SELECT value FROM counters WHERE name = ?", (COMMITS,)).fetchone()
        self.sequence = int(found[0]) if found else 0
        if self.verify:
            check_sequence(self.path, self.sequence, recorded)

    async def close(self) -> None:
        await self.writer.stop()

    def _submit(self, op: Op, write: bool = False, kind: str = "") -> asyncio.Future[Any]:
        return self.writer.submit(op, kind or ("write" if write else "read"))

    # ---- operations --------------------------------------------------------------------

    async def insert(self, row: TaskRow, before: Before | None = None) -> tuple[TaskRow, bool]:
        def op(conn: sqlite3.Connection) -> tuple[TaskRow, bool]:
            # the payload log's entry is staged here, in the writer's thread, so a burst of
            # submissions costs no thread hop each and is written once for the batch
            return _insert(conn, row, before)

        result: tuple[TaskRow, bool] = await self._submit(op, write=True)
        return result

    async def insert_many(
        self, items: list[tuple[TaskRow, Before | None]]
    ) -> list[tuple[TaskRow, bool] | Exception]:
        def op(conn: sqlite3.Connection) -> list[tuple[TaskRow, bool] | Exception]:
            # one writer operation for the whole batch; each row on its own, so that one
            # row's failure leaves the others standing. A failing statement undoes only
            # itself in SQLite: no savepoint needed.
            out: list[tuple[TaskRow, bool] | Exception] = []
            for row, before in items:
                try:
                    out.append(_insert(conn, row, before))
                except Exception as exc:
                    if is_disk_full(exc):  # not this row's fault: the whole batch waits
                        raise
                    out.append(exc)
            return out

        if not items:
            return []
        result: list[tuple[TaskRow, bool] | Exception] = await self._submit(op, write=True)
        return result

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        encoded = encode_values(values)
        sql = f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in encoded)} WHERE id = ?"
        params = [*encoded.values(), task_id]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        self.writer.update(op)

    def add_hook(self, hook: CommitHook) -> None:
        self.writer.hooks.append(hook)

    def after_commit(self, action: Callable[[], None]) -> None:
        self.writer.after(action)

    async def flush(self) -> None:
        await self._submit(noop, kind="flush")

    async def get(self, task_id: str) -> TaskRow | None:
        def op(conn: sqlite3.Connection) -> TaskRow | None:
            record = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return decode_row(record) if record else None

        result: TaskRow | None = await self._submit(op)
        return result

    async def find_key(self, client_id: str, idem_key: str) -> TaskRow | None:
        def op(conn: sqlite3.Connection) -> TaskRow | None:
            record = conn.execute(
                "SELECT * FROM tasks WHERE client_id = ? AND idem_key = ?", (client_id, idem_key)
            ).fetchone()
            return decode_row(record) if record else None

        result: TaskRow | None = await self._submit(op)
        return result

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]:
        def op(conn: sqlite3.Connection) -> list[TaskRow]:
            if state is None:
                cursor = conn.execute(
                    "SELECT * FROM tasks ORDER BY submitted_ms DESC, id DESC LIMIT ? OFFSET ?",
                    (limit, offset),
                )
            else:
                cursor = conn.execute(
                    "SELECT * FROM tasks WHERE state = ? ORDER BY submitted_ms DESC, id DESC "
                    "LIMIT ? OFFSET ?",
                    (state, limit, offset),
                )
            return [decode_row(r) for r in cursor.fetchall()]

        result: list[TaskRow] = await self._submit(op)
        return result

    async def unfinished(self) -> list[TaskRow]:
        def op(conn: sqlite3.Connection) -> list[TaskRow]:
            cursor = conn.execute(
                "SELECT * FROM tasks WHERE state NOT IN (?, ?, ?) ORDER BY submitted_ms, id",
                FINAL,
            )
            return [decode_row(r) for r in cursor.fetchall()]

        result: list[TaskRow] = await self._submit(op)
        return result

    async def import_rows(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Inserts rows salvaged from a damaged journal (columns this schema lacks are
        dropped; a row whose key is already here is skipped). Returns how many went in."""
        if table not in ("tasks", "agents", "counters"):
            raise ValueError(f"unknown table {table!r}")

        def op(conn: sqlite3.Connection) -> int:
            known = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
            added = 0
            for row in rows:
                names = [n for n in row if n in known]
                cursor = conn.execute(
                    f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) "
                    f"VALUES ({', '.join('?' * len(names))})",
                    [row[n] for n in names],
                )
                added += cursor.rowcount
            return added

        result: int = await self._submit(op, write=True)
        return result

    async def task_ids(self) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            return {str(r[0]) for r in conn.execute("SELECT id FROM tasks")}

        result: set[str] = await self._submit(op)
        return result

    async def prune(
        self,
        before_ms: int,
        keep_rows: int,
        forget: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> list[tuple[str, str]]:
        finished = "state IN ('done', 'dead', 'cancelled') AND delivery != 'pending'"

        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                f"SELECT id, payload_path FROM tasks WHERE {finished} AND finished_ms < ? "
                f"UNION SELECT id, payload_path FROM (SELECT id, payload_path FROM tasks "
                f"WHERE {finished} ORDER BY finished_ms DESC, id DESC LIMIT -1 OFFSET ?)",
                (before_ms, keep_rows),
            ).fetchall()
            gone = [(str(r[0]), str(r[1])) for r in rows]
            if forget is not None and gone:
                forget(gone)
            conn.executemany("DELETE FROM tasks WHERE id = ?", [(r[0],) for r in rows])
            return gone

        result: list[tuple[str, str]] = await self._submit(op, write=True)
        return result

    async def agents(self) -> dict[str, str]:
        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT id, credential_sha256 FROM agents").fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        result: dict[str, str] = await self._submit(op)
        return result

    async def add_agent(self, agent_id: str, credential_sha256: str, device_type: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO agents (id, credential_sha256, device_type, joined_ms) "
                "VALUES (?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER) * 1000)",
                (agent_id, credential_sha256, device_type),
            )

        await self._submit(op, write=True)

    async def remove_agents(self, agent_ids: list[str]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM agents WHERE id = ?", [(i,) for i in agent_ids])

        await self._submit(op, write=True)

    async def pending_deliveries(self) -> list[TaskRow]:
        def op(conn: sqlite3.Connection) -> list[TaskRow]:
            cursor = conn.execute(
                "SELECT * FROM tasks WHERE state = 'done' AND delivery = 'pending' "
                "ORDER BY finished_ms, id"
            )
            return [decode_row(r) for r in cursor.fetchall()]

        result: list[TaskRow] = await self._submit(op)
        return result

    async def counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            cursor = conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
            return {state: count for state, count in cursor.fetchall()}

        result: dict[str, int] = await self._submit(op)
        return result

    async def next_counter(self, name: str, floor: int = 0) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = MAX(value, ?) + 1",
                (name, floor + 1, floor),
            )
            value: int = conn.execute(
                "SELECT value FROM counters WHERE name = ?", (name,)
            ).fetchone()[0]
            return value

        result: int = await self._submit(op, write=True)
        return result


_COLUMNS = TaskRow.columns()
_INSERT = (
    f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (client_id, idem_key) DO NOTHING"
)


def _insert(conn: sqlite3.Connection, row: TaskRow, before: Before | None) -> tuple[TaskRow, bool]:
    """Stores a new task: (row, False); for a repeated idempotency key nothing is stored and
    the row the key already names comes back, (that row, True). ``before`` runs first (it stages
    the payload); the row is encoded after it, as it may set where the payload lies, and its
    undo runs when the row is not stored: no entry is written for a task the journal lacks."""
    undo = before() if before is not None else None
    values = encode_row(row)
    try:
        cursor = conn.execute(_INSERT, [values[n] for n in _COLUMNS])
    except BaseException:
        if undo is not None:
            undo()
        raise
    if cursor.rowcount == 1:
        return row, False
    if undo is not None:
        undo()
    record = conn.execute(
        "SELECT * FROM tasks WHERE client_id = ? AND idem_key = ?",
        (row.client_id, row.idem_key),
    ).fetchone()
    return decode_row(record), True
