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
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgesched import failpoints
from edgesched.errors import DiskFullError, JournalError
from edgesched.journal.base import TaskRow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JSON_FIELDS = ("detections", "timings", "errors", "metadata")
FINAL = ("done", "dead", "cancelled")

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        task_type TEXT NOT NULL,
        filename TEXT NOT NULL,
        payload_path TEXT NOT NULL,
        payload_size INTEGER NOT NULL,
        submitted_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL DEFAULT '',
        attempt INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        device_id TEXT NOT NULL DEFAULT '',
        device_type TEXT NOT NULL DEFAULT '',
        updated_ms INTEGER NOT NULL DEFAULT 0,
        finished_ms INTEGER NOT NULL DEFAULT 0,
        label TEXT NOT NULL DEFAULT '',
        detections TEXT NOT NULL DEFAULT '[]',
        timings TEXT NOT NULL DEFAULT '{}',
        errors TEXT NOT NULL DEFAULT '[]',
        error TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL DEFAULT '{}',
        origin TEXT NOT NULL DEFAULT 'native',
        strategy TEXT NOT NULL DEFAULT '',
        deadline_ms INTEGER NOT NULL DEFAULT 0,
        client_addr TEXT NOT NULL DEFAULT '',
        delivery TEXT NOT NULL DEFAULT '',
        UNIQUE (client_id, idem_key)
    );
    CREATE INDEX tasks_state ON tasks (state, submitted_ms);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        credential_sha256 TEXT NOT NULL,
        device_type TEXT NOT NULL DEFAULT '',
        joined_ms INTEGER NOT NULL DEFAULT 0
    );
    """,
}

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()


def _encode(row: TaskRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in TaskRow.columns()}
    for name in JSON_FIELDS:
        values[name] = json.dumps(values[name], separators=(",", ":"))
    return values


def _decode(record: sqlite3.Row) -> TaskRow:
    values = dict(record)
    for name in JSON_FIELDS:
        values[name] = json.loads(values[name])
    return TaskRow(**values)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class SQLiteJournal:
    def __init__(self, path: str | Path, durability: str = "normal") -> None:
        self.path = Path(path)
        self.durability = durability
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.commits = 0  #: transactions committed (group commits)
        self.ops = 0  #: operations committed

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise JournalError(
                f"journal {self.path} has schema version {version}, newer than this edgesched "
                f"({SCHEMA_VERSION}); upgrade edgesched instead of opening it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        self._conn = conn

    async def close(self) -> None:
        if self._thread is None:
            return
        await self.flush()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < 2000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(conn, batch)

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        results: list[tuple[Any, bool]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # the common case: every operation succeeds, no savepoint needed
                results = [(op(conn), False) for op, _, _, _ in batch]
            except Exception:  # one bad operation must not sink the batch: redo it one by one
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                results = [self._isolated(conn, op) for op, _, _, _ in batch]
            if any(write for _, _, _, write in batch):
                failpoints.hit("before_commit")
            conn.execute("COMMIT")
            self.commits += 1
            self.ops += len(batch)
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            wrapped: Exception = (
                DiskFullError(f"journal: no space left on device ({exc})")
                if _is_disk_full(exc)
                else JournalError(f"journal commit failed: {exc}")
            )
            log.error("journal commit of %d operations failed: %s", len(batch), exc)
            results = [(wrapped, True)] * len(batch)
        for (_, future, loop, _), (value, failed) in zip(batch, results, strict=True):
            if future is None:
                if failed:
                    log.error("journal update failed: %s", value)
                continue
            loop.call_soon_threadsafe(_resolve, future, value, failed)

    @staticmethod
    def _isolated(conn: sqlite3.Connection, op: Op) -> tuple[Any, bool]:
        """One operation inside its own savepoint: its failure undoes it alone."""
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return exc, True
        conn.execute("RELEASE op")
        return value, False

    def _submit(self, op: Op, write: bool = False) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, future, loop, write))
        return future

    # ---- operations --------------------------------------------------------------------

    async def insert(
        self, row: TaskRow, before: Callable[[], None] | None = None
    ) -> tuple[TaskRow, bool]:
        values = _encode(row)
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
            return _decode(record), True

        result: tuple[TaskRow, bool] = await self._submit(op, write=True)
        return result

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        encoded = {
            k: json.dumps(v, separators=(",", ":")) if k in JSON_FIELDS else v
            for k, v in values.items()
        }
        sql = f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in encoded)} WHERE id = ?"
        params = [*encoded.values(), task_id]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        self._queue.put((op, None, None, True))

    async def flush(self) -> None:
        await self._submit(lambda conn: None)

    async def get(self, task_id: str) -> TaskRow | None:
        def op(conn: sqlite3.Connection) -> TaskRow | None:
            record = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return _decode(record) if record else None

        result: TaskRow | None = await self._submit(op)
        return result

    async def find_key(self, client_id: str, idem_key: str) -> TaskRow | None:
        def op(conn: sqlite3.Connection) -> TaskRow | None:
            record = conn.execute(
                "SELECT * FROM tasks WHERE client_id = ? AND idem_key = ?", (client_id, idem_key)
            ).fetchone()
            return _decode(record) if record else None

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
            return [_decode(r) for r in cursor.fetchall()]

        result: list[TaskRow] = await self._submit(op)
        return result

    async def unfinished(self) -> list[TaskRow]:
        def op(conn: sqlite3.Connection) -> list[TaskRow]:
            cursor = conn.execute(
                "SELECT * FROM tasks WHERE state NOT IN (?, ?, ?) ORDER BY submitted_ms, id",
                FINAL,
            )
            return [_decode(r) for r in cursor.fetchall()]

        result: list[TaskRow] = await self._submit(op)
        return result

    async def prune(self, before_ms: int, keep_rows: int) -> list[str]:
        finished = "state IN ('done', 'dead', 'cancelled') AND delivery != 'pending'"

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                f"SELECT id, payload_path FROM tasks WHERE {finished} AND finished_ms < ? "
                f"UNION SELECT id, payload_path FROM (SELECT id, payload_path FROM tasks "
                f"WHERE {finished} ORDER BY finished_ms DESC, id DESC LIMIT -1 OFFSET ?)",
                (before_ms, keep_rows),
            ).fetchall()
            conn.executemany("DELETE FROM tasks WHERE id = ?", [(r[0],) for r in rows])
            return [str(r[1]) for r in rows]

        result: list[str] = await self._submit(op, write=True)
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
            return [_decode(r) for r in cursor.fetchall()]

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
