"""The SQLite journal: WAL mode, one writer thread, group commit.

Every call becomes an operation on one queue. The writer thread takes whatever has queued, runs
it in one transaction and commits once (group commit: never waiting on a timer), then resolves
the callers' futures. So a submission is on disk when ``insert`` returns, updates stay in order,
and the event loop never waits on SQLite or an fsync.

Durability: "normal" (``synchronous=NORMAL``) survives a crash of the process; "full"
(``synchronous=FULL``) also survives a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched import failpoints
from edgesched.errors import DamagedJournalError, DiskFullError, JournalError
from edgesched.journal.base import TaskRow
from edgesched.journal.files import create_private, private_dir
from edgesched.journal.integrity import (
    COMMITS,
    check_present,
    check_sequence,
    check_sound,
    commit_record_path,
    read_commit_record,
)
from edgesched.journal.schema import FINAL, decode_row, encode_row, encode_values, migrate

log = logging.getLogger(__name__)

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()

#: how often the writer tries again a batch the disk had no room for
RETRY_S = 1.0


@dataclass(slots=True)
class _Item:
    """One queued operation. ``kind``: read | write (a caller waits) | update (nobody waits,
    never dropped) | flush | after (``then`` runs once everything queued before it committed)."""

    op: Op
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None
    kind: str
    then: Callable[[], None] | None = None


def _noop(conn: sqlite3.Connection) -> None:
    return None


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class SQLiteJournal:
    """The ``Journal`` on SQLite (WAL): one writer thread, group commit, updates held and
    retried on a full disk, the commit side record kept current. Owns the connection, the
    writer thread and its queue, and the side record's file. It may not know what a task
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
        self.durability = durability
        #: called in the writer's thread when a commit meets a full disk; True if it freed
        #: space (the reserve), and the commit is tried again at once
        self.on_full = on_full
        self.verify = verify  #: refuse to open a journal that misses work (False: --repair)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._record_fd = -1
        self.commits = 0  #: transactions committed (group commits)
        self.ops = 0  #: operations committed
        self.sequence = 0  #: write transactions committed over the journal's life
        #: what the side file said at open, before it was brought up to date (-1: no side file)
        self.recorded = -1
        #: why the journal cannot write now ("" when it can); set by a failed commit, cleared by
        #: the next one that succeeds (what failed is kept and tried again)
        self.fault = ""
        self.held = 0  #: operations waiting for a commit that failed to be retried

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

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
            if _is_disk_full(exc):
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
        self._conn = conn
        self._record_fd = os.open(commit_record_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self._record_fd, 0o600)
        self._write_record()

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

    def _write_record(self) -> None:
        """The side file: the sequence, overwritten in place (no new blocks on a full disk)."""
        try:
            os.pwrite(self._record_fd, f"{self.sequence:020d}\n".encode("ascii"), 0)
            if self.durability == "full":
                os.fdatasync(self._record_fd)
        except OSError as exc:
            log.error("journal: cannot update %s: %s", commit_record_path(self.path), exc)

    async def close(self) -> None:
        if self._thread is None:
            return
        # everything queued before the stop is committed first (or, on a full disk, tried once
        # more and reported): no flush to wait on, which a full disk could hold forever
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._record_fd >= 0:
            os.close(self._record_fd)
            self._record_fd = -1

    # ---- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        held: list[_Item] = []
        stop = False
        while True:
            batch: list[Any] = []
            if not stop:
                # with work held back by a full disk, try again every RETRY_S
                with contextlib.suppress(queue.Empty):
                    batch.append(self._queue.get(timeout=RETRY_S if held else None))
                while len(batch) < 2000:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            items: list[_Item] = held + batch
            held = self._commit(conn, items) if items else []
            self.held = len(held)
            if stop and (not held or not batch):
                break
        if held:
            updates = sum(1 for item in held if item.kind == "update")
            log.error(
                "journal: stopping with %d updates not written (%s); their tasks resume from "
                "their last journaled state and no payload of theirs was deleted",
                updates,
                self.fault,
            )
            error = DiskFullError(self.fault or "journal stopped")
            for item in held:
                if item.future is not None and item.loop is not None:
                    item.loop.call_soon_threadsafe(_resolve, item.future, error, True)

    def _commit(
        self, conn: sqlite3.Connection, batch: list[_Item], again: bool = False
    ) -> list[_Item]:
        """Runs ``batch`` in one transaction; returns what must be tried again (a full disk)."""
        results: list[tuple[Any, bool]] = []
        writes = any(item.kind in ("write", "update") for item in batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # the common case: every operation succeeds, no savepoint needed
                results = [(item.op(conn), False) for item in batch]
            except (
                Exception
            ) as exc:  # one bad operation must not sink the batch: redo it one by one
                if _is_disk_full(exc):
                    raise
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                results = [self._isolated(conn, item.op) for item in batch]
            if writes:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + 1",
                    (COMMITS, self.sequence + 1),
                )
                failpoints.hit("before_commit")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            full = _is_disk_full(exc)
            if full and not again and self.on_full is not None and self.on_full():
                log.warning("journal: the disk is full; released the reserve to go on")
                return self._commit(conn, batch, again=True)
            return self._failed(conn, batch, exc, full)
        if writes:
            self.sequence += 1
            self._write_record()
        if self.fault:
            log.warning("journal: writing again (%d operations were held)", len(batch))
            self.fault = ""
        self.commits += 1
        self.ops += len(batch)
        for item, (value, failed) in zip(batch, results, strict=True):
            if item.then is not None:
                try:
                    item.then()
                except Exception:
                    log.exception("journal: after-commit action failed")
            if item.future is None or item.loop is None:
                if failed:
                    log.error("journal update failed: %s", value)
                continue
            item.loop.call_soon_threadsafe(_resolve, item.future, value, failed)
        return []

    def _failed(
        self, conn: sqlite3.Connection, batch: list[_Item], exc: Exception, full: bool
    ) -> list[_Item]:
        """A commit failed: callers of writes get the error; updates, flushes and after-commit
        actions are kept, in order, and tried again (a lost update could let a payload be
        deleted whose task the journal still holds as unfinished); reads run on their own."""
        wrapped: Exception = (
            DiskFullError(f"journal: no space left on device ({exc})")
            if full
            else JournalError(f"journal commit failed: {exc}")
        )
        if not self.fault:
            log.error("journal commit of %d operations failed: %s", len(batch), exc)
        self.fault = str(wrapped)
        keep: list[_Item] = []
        reads: list[_Item] = []
        for item in batch:
            if item.kind in ("update", "flush", "after"):
                keep.append(item)
            elif item.kind == "read":
                reads.append(item)
            elif item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_resolve, item.future, wrapped, True)
        if not keep:  # nothing held: a write of nothing finds out when space has returned
            keep.append(_Item(_noop, None, None, "update"))
        for item in reads:
            try:
                value: Any = item.op(conn)
                failed = False
            except Exception as read_error:
                value, failed = read_error, True
            assert item.future is not None and item.loop is not None
            item.loop.call_soon_threadsafe(_resolve, item.future, value, failed)
        return keep

    @staticmethod
    def _isolated(conn: sqlite3.Connection, op: Op) -> tuple[Any, bool]:
        """One operation inside its own savepoint: its failure undoes it alone."""
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            if _is_disk_full(exc):  # not this operation's fault: the whole batch waits
                raise
            return exc, True
        conn.execute("RELEASE op")
        return value, False

    def _submit(self, op: Op, write: bool = False, kind: str = "") -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Item(op, future, loop, kind or ("write" if write else "read")))
        return future

    # ---- operations --------------------------------------------------------------------

    async def insert(
        self, row: TaskRow, before: Callable[[], None] | None = None
    ) -> tuple[TaskRow, bool]:
        values = encode_row(row)
        names = list(values)
        sql = (
            f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            "ON CONFLICT (client_id, idem_key) DO NOTHING"
        )

        def op(conn: sqlite3.Connection) -> tuple[TaskRow, bool]:
            # the payload file is written here, in the writer's thread, so a burst of
            # submissions costs no thread hop each and commits in one transaction
            if before is not None:
                before()
            cursor = conn.execute(sql, [values[n] for n in names])
            if cursor.rowcount == 1:
                return row, False
            record = conn.execute(
                "SELECT * FROM tasks WHERE client_id = ? AND idem_key = ?",
                (row.client_id, row.idem_key),
            ).fetchone()
            return decode_row(record), True

        result: tuple[TaskRow, bool] = await self._submit(op, write=True)
        return result

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        encoded = encode_values(values)
        sql = f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in encoded)} WHERE id = ?"
        params = [*encoded.values(), task_id]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        self._queue.put(_Item(op, None, None, "update"))

    def after_commit(self, action: Callable[[], None]) -> None:
        self._queue.put(_Item(_noop, None, None, "after", action))

    async def flush(self) -> None:
        await self._submit(_noop, kind="flush")

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


def _resolve(future: asyncio.Future[Any], value: Any, failed: bool) -> None:
    if future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)
