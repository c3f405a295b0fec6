"""Where the master keeps payloads: the ``PayloadStore`` protocol, and its database kind.

Two stores implement it: the payload log (``payloadlog.PayloadLog``, segment files beside the
SQLite journal) and ``DbPayloadStore`` (the ``payloads`` table of a PostgreSQL journal, so that
any master on that database can serve any task). The master's parts (admission, ends,
operations, the agent link's reads) depend on this protocol only.

``DbPayloadStore``: a payload's bytes are inserted in the SAME transaction as their row (the
journal calls ``write_staged`` before its COMMIT), deleted by a later transaction once the
task's end is committed (``release``) and by retention with their row. A native row's
``payload_path`` is ``db:<task id>``; a seed upload keeps its file as ``payload_path`` (the seed
client's replies name it) and its bytes go in the table too (any master can dispatch it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgesched.errors import JournalError, JournalUnavailableError, PayloadError
from edgesched.journal.base import TaskRow

if TYPE_CHECKING:
    from edgesched.journal.postgres import PostgresJournal

log = logging.getLogger("edgesched.payloadstore")

DB_PREFIX = "db:"
#: how long a read waits for a database that went away before it gives up (bounded)
READ_WAIT_S = 120.0
READ_POLL_S = 0.25


def is_db_ref(payload_path: str) -> bool:
    """Whether ``payload_path`` names a payload kept in the database (not a file, not a log
    entry)."""
    return payload_path.startswith(DB_PREFIX)


class PayloadStore(Protocol):
    """What the master uses of a payload store. The ``CommitHook`` methods and
    ``stage_task``/``unstage``/``release`` run in the journal's writer (thread or task)."""

    #: True: a seed upload's bytes are stored too (not only its file)
    stores_uploads: bool

    def open(self) -> Mapping[str, Any]:
        """Opens the store; the payload log returns its live entries (the start's checks)."""
        ...

    def close(self) -> None: ...

    def stage_task(self, row: TaskRow, data: bytes | None, commit: int) -> str:
        """Stages ``row``'s payload for the transaction in progress; returns where it lies."""
        ...

    def unstage(self, task_id: str) -> None:
        """Takes back what was staged for ``task_id`` (its row was not inserted)."""
        ...

    def before_commit(self) -> None: ...

    def committed(self) -> None: ...

    def discard(self) -> None: ...

    def release(self, task_ids: list[str]) -> None:
        """Tasks whose end is committed: their payloads go with a later transaction."""
        ...

    def read(self, payload_path: str) -> bytes:
        """Blocking read (a worker thread; never the event loop's thread for the database
        store). ``PayloadError`` when it cannot be read back as submitted."""
        ...

    def present(self, payload_path: str) -> bool: ...

    async def aread(self, row: TaskRow) -> bytes:
        """A task's payload, from the event loop (never blocking it)."""
        ...

    async def apresent(self, row: TaskRow) -> bool:
        """Whether the task's payload can still be read back."""
        ...


class DbPayloadStore:
    """Payloads in the PostgreSQL journal's ``payloads`` table. Owns the payloads staged by the
    transaction being built and the released ids not yet deleted; the journal writes them
    (``write_staged``) inside its transaction, so a row is never durable without its payload.
    It may not decide whether a task is done or lost (the master does, from the journal)."""

    stores_uploads = True

    def __init__(self, journal: PostgresJournal) -> None:
        self.journal = journal
        self._staged: dict[str, bytes] = {}
        self._released: list[str] = []
        self._taken = 0  #: released ids the transaction in progress deletes
        self._nudged = False  #: a write turn is queued that will delete the released ids
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> Mapping[str, Any]:
        return {}  # nothing to scan: the database holds rows and payloads together

    def close(self) -> None:
        return None  # the journal's connection is the store's

    # ---- the writer's side ----------------------------------------------------------------

    def stage_task(self, row: TaskRow, data: bytes | None, commit: int) -> str:
        if not row.payload_path:  # a native task; a seed upload keeps its file's path
            row.payload_path = DB_PREFIX + row.id
        if data is not None:
            self._staged[row.id] = data
        return row.payload_path

    def unstage(self, task_id: str) -> None:
        self._staged.pop(task_id, None)

    async def write_staged(self, conn: Any) -> None:
        """Inside the journal's write transaction, before its COMMIT: the staged payloads in,
        the released ones out (``conn``: the journal's asyncpg connection)."""
        if self._staged:
            await conn.execute(
                "INSERT INTO payloads (task_id, data) SELECT * FROM unnest($1::text[], "
                "$2::bytea[]) ON CONFLICT (task_id) DO NOTHING",
                list(self._staged),
                list(self._staged.values()),
            )
        self._nudged = False
        self._taken = len(self._released)
        if self._taken:
            await conn.execute(
                "DELETE FROM payloads WHERE task_id = ANY($1::text[])",
                self._released[: self._taken],
            )

    def before_commit(self) -> None:
        return None  # written by ``write_staged``, inside the transaction

    def committed(self) -> None:
        self._staged.clear()
        del self._released[: self._taken]
        self._taken = 0

    def discard(self) -> None:
        self._staged.clear()  # the redo stages them again; released ids stay to be deleted
        self._taken = 0

    def release(self, task_ids: list[str]) -> None:
        if not task_ids:
            return
        self._released.extend(task_ids)
        if not self._nudged:  # one write turn deletes every id released until it runs
            self._nudged = True
            self.journal.execute_later("SELECT 1", ())

    # ---- reading ------------------------------------------------------------------------

    async def aread(self, row: TaskRow) -> bytes:
        self._loop = asyncio.get_running_loop()
        data = await self._fetch(row.id)
        if data is not None:
            return data
        if is_db_ref(row.payload_path):
            raise PayloadError(f"payload of task {row.id}: not in the database")
        return await asyncio.to_thread(_read_file, row.payload_path)

    async def apresent(self, row: TaskRow) -> bool:
        try:
            await self.aread(row)
        except PayloadError:
            return False
        return True

    async def _fetch(self, task_id: str) -> bytes | None:
        """The bytes from the table, waiting (bounded) while the database is away: a task
        whose payload is not in memory is not failed for an outage."""
        waited = 0.0
        while True:
            try:
                return await self.journal.read_payload(task_id)
            except JournalUnavailableError as exc:
                if waited >= READ_WAIT_S:
                    raise PayloadError(f"payload of task {task_id}: {exc}") from exc
            except JournalError as exc:
                raise PayloadError(f"payload of task {task_id}: {exc}") from exc
            await asyncio.sleep(READ_POLL_S)
            waited += READ_POLL_S

    def read(self, payload_path: str) -> bytes:
        """From a worker thread: through the event loop the store was read from."""
        if not is_db_ref(payload_path):
            return _read_file(payload_path)
        loop = self._loop
        running = None
        with contextlib.suppress(RuntimeError):
            running = asyncio.get_running_loop()
        if loop is None or running is loop:
            raise PayloadError(
                f"payload {payload_path}: read it with aread (the database store never blocks "
                "its event loop)"
            )
        task_id = payload_path[len(DB_PREFIX) :]
        data = asyncio.run_coroutine_threadsafe(self._fetch(task_id), loop).result(READ_WAIT_S + 30)
        if data is None:
            raise PayloadError(f"payload of task {task_id}: not in the database")
        return data

    def present(self, payload_path: str) -> bool:
        try:
            self.read(payload_path)
        except PayloadError:
            return False
        return True


def _read_file(payload_path: str) -> bytes:
    try:
        return Path(payload_path).read_bytes()
    except OSError as exc:
        raise PayloadError(f"payload {payload_path}: {exc.strerror}") from exc
