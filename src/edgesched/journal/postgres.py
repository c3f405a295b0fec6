"""The PostgreSQL journal: one asyncpg connection, one asyncio writer task, group commit.

Chosen by ``master.journal = "postgresql://..."``; this module (and asyncpg) is imported only
then. Every call becomes an item on the writer's queue; the writer takes whatever has queued and
runs it in ONE transaction (never waiting on a timer), then resolves the callers: a run of
inserts is one ``INSERT ... SELECT FROM unnest(...)``, a run of the same update one
``executemany``. A statement that fails aborts a PostgreSQL transaction, so the batch is then
redone with each operation (each row of an insert batch) in its own savepoint: one bad item
never sinks the others.

Durability: PostgreSQL acknowledges a COMMIT once its WAL is flushed (``synchronous_commit``
stays on, and with a synchronous standby configured, once the standby has it too), so an
insert is durable when it returns under both "normal" and "full": they map identically. The
difference SQLite makes (surviving a power cut or only a process crash) is the server's
configuration here (``fsync``, ``synchronous_commit``), not the client's.

The database going away (a restart, a failover, the network): the journal sets ``fault``
("database unavailable: ..."); inserts, other writes and reads fail at once with
``JournalUnavailableError``; updates, flushes and after-commit actions are HELD in order and
applied once it reconnects (with a capped backoff). A commit whose outcome is unknown (the
connection broke during COMMIT) is safe to redo: updates set values, and an insert's caller was
not acknowledged (its client retries with the same key and gets the row if it had committed).

Fencing: with ``fence`` set to the lease's token, every write transaction starts with
``SELECT edgesched_fence(token)``; when another master has taken the lease the database
refuses it (SQLSTATE EF001): the callers get ``FencedError``, what was held is dropped (never
retried) and ``on_fenced`` is called once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from edgesched.errors import FencedError, JournalError, JournalUnavailableError
from edgesched.journal.base import UNAVAILABLE, Before, CommitHook, TaskRow
from edgesched.journal.pgschema import (
    BY_KEYS,
    COLUMNS,
    FENCED_SQLSTATE,
    INSERT_MANY,
    INSERT_ONE,
    encode_row,
    migrate,
    redact,
)
from edgesched.journal.schema import FINAL, decode_row, encode_values

log = logging.getLogger("edgesched.journal.postgres")

Op = Callable[[Any], Awaitable[Any]]
#: the most operations one transaction takes
BATCH_MAX = 2000
#: reconnect backoff: first wait, cap
RECONNECT_FIRST_S = 0.05
RECONNECT_CAP_S = 2.0
CONNECT_TIMEOUT_S = 5.0
#: a statement that takes longer than this is a database gone away (a black-holed network)
COMMAND_TIMEOUT_S = 30.0


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or cannot write now (not this operation's fault)."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return True
    state = str(getattr(exc, "sqlstate", "") or "")
    # 08: connection exceptions; 57P: shutdown, crash, cannot connect now; 25006: a read-only
    # transaction (a replica that has not been promoted yet); 53: out of resources
    return state.startswith(("08", "57P", "53")) or state == "25006"


def is_fenced(exc: BaseException) -> bool:
    return str(getattr(exc, "sqlstate", "") or "") == FENCED_SQLSTATE


class SqlHook(Protocol):
    """A commit hook that writes inside the transaction itself (the database payload store)."""

    async def write_staged(self, conn: Any) -> None: ...


@dataclass(slots=True)
class _Item:
    """One queued operation. ``kind``: read | write (a caller waits) | insert (rows; a caller
    waits) | update (nobody waits, never dropped) | flush | after (``then`` runs once
    everything queued before it committed)."""

    kind: str
    future: asyncio.Future[Any] | None = None
    op: Op | None = None
    sql: str = ""  #: an update's statement (a run of the same one is one executemany)
    args: tuple[Any, ...] = ()
    rows: list[tuple[TaskRow, Before | None]] = field(default_factory=list)
    many: bool = False  #: insert_many (a list of outcomes) rather than insert
    then: Callable[[], None] | None = None


class _Unavailable(Exception):
    """The batch met a database gone away (wraps the driver's error)."""


class _Fenced(Exception):
    """The batch's fence check was refused."""


class PostgresJournal:
    """The ``Journal`` on PostgreSQL: one connection, one writer task, group commit, updates
    held and redone while the database is away, every write fenced when ``fence`` is set.
    Owns its connection, its queue and its writer task. It may not know what a task means
    beyond its row, nor decide who leads (it only carries the token it is given)."""

    def __init__(self, dsn: str, durability: str = "normal") -> None:
        self.dsn = dsn
        self.where = redact(dsn)
        self.durability = durability  #: "normal" and "full" alike: see the module's docstring
        self.fault = ""
        self.sequence = 0
        self.commits = 0  #: transactions committed (group commits)
        self.ops = 0  #: operations committed
        self.held = 0  #: operations held while the database is away
        self.hooks: list[CommitHook] = []
        #: the lease's token every write transaction checks (None: no check)
        self._fence: int | None = None
        #: called once with the message when the database refused this master's token
        self.on_fenced: Callable[[str], None] | None = None
        self.fenced = ""  #: why writes are refused for good (until ``fence`` changes)
        self.conn: Any = None
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def fence(self) -> int | None:
        return self._fence

    @fence.setter
    def fence(self, token: int | None) -> None:
        """A new token (a new term as leader) lifts a refusal met with the old one."""
        if token != self._fence:
            self.fenced = ""
        self._fence = token

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        try:
            self.conn = await self._connect()
        except Exception as exc:
            raise JournalUnavailableError(
                f"{UNAVAILABLE}: cannot reach journal {self.where}: {exc}"
            ) from exc
        try:
            await migrate(self.conn, self.where)
        except asyncpg.PostgresError as exc:
            await self.conn.close()
            self.conn = None
            raise JournalError(f"journal {self.where}: cannot migrate its schema: {exc}") from exc
        except BaseException:
            await self.conn.close()
            self.conn = None
            raise
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    async def _connect(self) -> Any:
        return await asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S
        )

    async def close(self) -> None:
        if self._task is None:
            return
        # everything queued before the stop is committed first (or, with the database away,
        # tried once more and reported)
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), CONNECT_TIMEOUT_S)
            self.conn = None

    # ---- the queue -----------------------------------------------------------------------

    def _put(self, item: _Item) -> None:
        self._queue.append(item)
        self._wake.set()

    def _check(self, write: bool) -> None:
        if write and self.fenced:
            raise FencedError(self.fenced)
        if self.fault:
            raise JournalUnavailableError(self.fault)

    def _submit(self, kind: str, op: Op | None = None, **extra: Any) -> asyncio.Future[Any]:
        self._check(write=kind != "read")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Item(kind, future, op, **extra))
        return future

    # ---- operations --------------------------------------------------------------------

    async def insert(self, row: TaskRow, before: Before | None = None) -> tuple[TaskRow, bool]:
        result: tuple[TaskRow, bool] = await self._submit("insert", rows=[(row, before)])
        return result

    async def insert_many(
        self, items: list[tuple[TaskRow, Before | None]]
    ) -> list[tuple[TaskRow, bool] | Exception]:
        if not items:
            return []
        result: list[tuple[TaskRow, bool] | Exception] = await self._submit(
            "insert", rows=list(items), many=True
        )
        return result

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        encoded = encode_values(values)
        names = list(encoded)
        sql = (
            f"UPDATE tasks SET {', '.join(f'{k} = ${i + 1}' for i, k in enumerate(names))} "
            f"WHERE id = ${len(names) + 1}"
        )
        self.execute_later(sql, (*encoded.values(), task_id))

    def execute_later(self, sql: str, args: tuple[Any, ...]) -> None:
        """Queues a write nobody waits for, in order with the updates, never dropped (unless
        fenced): how the payload store deletes released payloads."""
        if self.fenced:
            log.debug("journal: fenced, a write is dropped: %s", sql[:60])
            return
        self._put(_Item("update", sql=sql, args=args))

    def add_hook(self, hook: CommitHook) -> None:
        self.hooks.append(hook)

    def after_commit(self, action: Callable[[], None]) -> None:
        if self.fenced:
            return  # nothing this master queues will commit: the new leader decides
        self._put(_Item("after", then=action))

    async def flush(self) -> None:
        if self.fenced:
            raise FencedError(self.fenced)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Item("flush", future))
        await future

    async def _read(self, op: Op) -> Any:
        return await self._submit("read", op)

    async def _write(self, op: Op) -> Any:
        return await self._submit("write", op)

    async def get(self, task_id: str) -> TaskRow | None:
        async def op(conn: Any) -> TaskRow | None:
            record = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
            return decode_row(record) if record else None

        result: TaskRow | None = await self._read(op)
        return result

    async def find_key(self, client_id: str, idem_key: str) -> TaskRow | None:
        async def op(conn: Any) -> TaskRow | None:
            record = await conn.fetchrow(
                "SELECT * FROM tasks WHERE client_id = $1 AND idem_key = $2", client_id, idem_key
            )
            return decode_row(record) if record else None

        result: TaskRow | None = await self._read(op)
        return result

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]:
        async def op(conn: Any) -> list[TaskRow]:
            if state is None:
                records = await conn.fetch(
                    "SELECT * FROM tasks ORDER BY submitted_ms DESC, id DESC LIMIT $1 OFFSET $2",
                    limit,
                    offset,
                )
            else:
                records = await conn.fetch(
                    "SELECT * FROM tasks WHERE state = $1 ORDER BY submitted_ms DESC, id DESC "
                    "LIMIT $2 OFFSET $3",
                    state,
                    limit,
                    offset,
                )
            return [decode_row(r) for r in records]

        result: list[TaskRow] = await self._read(op)
        return result

    async def unfinished(self) -> list[TaskRow]:
        async def op(conn: Any) -> list[TaskRow]:
            records = await conn.fetch(
                "SELECT * FROM tasks WHERE state <> ALL($1::text[]) ORDER BY submitted_ms, id",
                list(FINAL),
            )
            return [decode_row(r) for r in records]

        result: list[TaskRow] = await self._read(op)
        return result

    async def task_ids(self) -> set[str]:
        async def op(conn: Any) -> set[str]:
            return {str(r[0]) for r in await conn.fetch("SELECT id FROM tasks")}

        result: set[str] = await self._read(op)
        return result

    async def counts(self) -> dict[str, int]:
        async def op(conn: Any) -> dict[str, int]:
            records = await conn.fetch("SELECT state, COUNT(*) FROM tasks GROUP BY state")
            return {str(r[0]): int(r[1]) for r in records}

        result: dict[str, int] = await self._read(op)
        return result

    async def prune(
        self,
        before_ms: int,
        keep_rows: int,
        forget: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> list[tuple[str, str]]:
        finished = "state IN ('done', 'dead', 'cancelled') AND delivery <> 'pending'"

        async def op(conn: Any) -> list[tuple[str, str]]:
            records = await conn.fetch(
                f"SELECT id, payload_path FROM tasks WHERE {finished} AND finished_ms < $1 "
                f"UNION SELECT id, payload_path FROM (SELECT id, payload_path FROM tasks "
                f"WHERE {finished} ORDER BY finished_ms DESC, id DESC OFFSET $2) older",
                before_ms,
                keep_rows,
            )
            gone = [(str(r[0]), str(r[1])) for r in records]
            if forget is not None and gone:
                forget(gone)
            ids = [task_id for task_id, _ in gone]
            if ids:  # a pruned task's payload goes with its row
                await conn.execute("DELETE FROM tasks WHERE id = ANY($1::text[])", ids)
                await conn.execute("DELETE FROM payloads WHERE task_id = ANY($1::text[])", ids)
            return gone

        result: list[tuple[str, str]] = await self._write(op)
        return result

    async def agents(self) -> dict[str, str]:
        async def op(conn: Any) -> dict[str, str]:
            records = await conn.fetch("SELECT id, credential_sha256 FROM agents")
            return {str(r[0]): str(r[1]) for r in records}

        result: dict[str, str] = await self._read(op)
        return result

    async def add_agent(self, agent_id: str, credential_sha256: str, device_type: str) -> None:
        async def op(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO agents (id, credential_sha256, device_type, joined_ms) "
                "VALUES ($1, $2, $3, (extract(epoch FROM now()) * 1000)::bigint) "
                "ON CONFLICT (id) DO UPDATE SET credential_sha256 = EXCLUDED.credential_sha256, "
                "device_type = EXCLUDED.device_type, joined_ms = EXCLUDED.joined_ms",
                agent_id,
                credential_sha256,
                device_type,
            )

        await self._write(op)

    async def remove_agents(self, agent_ids: list[str]) -> None:
        async def op(conn: Any) -> None:
            await conn.execute("DELETE FROM agents WHERE id = ANY($1::text[])", list(agent_ids))

        await self._write(op)

    async def pending_deliveries(self) -> list[TaskRow]:
        async def op(conn: Any) -> list[TaskRow]:
            records = await conn.fetch(
                "SELECT * FROM tasks WHERE state = 'done' AND delivery = 'pending' "
                "ORDER BY finished_ms, id"
            )
            return [decode_row(r) for r in records]

        result: list[TaskRow] = await self._read(op)
        return result

    async def next_counter(self, name: str, floor: int = 0) -> int:
        async def op(conn: Any) -> int:
            value = await conn.fetchval(
                "INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name) DO "
                "UPDATE SET value = GREATEST(counters.value, $3) + 1 RETURNING value",
                name,
                floor + 1,
                floor,
            )
            return int(value)

        result: int = await self._write(op)
        return result

    async def read_payload(self, task_id: str) -> bytes | None:
        """A task's payload bytes from the ``payloads`` table (None: none kept)."""

        async def op(conn: Any) -> bytes | None:
            data = await conn.fetchval("SELECT data FROM payloads WHERE task_id = $1", task_id)
            return bytes(data) if data is not None else None

        result: bytes | None = await self._read(op)
        return result

    # ---- the writer ----------------------------------------------------------------------

    async def _run(self) -> None:
        held: list[_Item] = []
        backoff = RECONNECT_FIRST_S
        tried_after_stop = False
        while True:
            if not self._queue and not held and not self._stopping:
                self._wake.clear()
                await self._wake.wait()
            batch = list(held)
            while self._queue and len(batch) < BATCH_MAX:
                batch.append(self._queue.popleft())
            stopping = self._stopping and not self._queue
            if self.conn is None:
                try:
                    self.conn = await self._connect()
                except Exception as exc:
                    held = self._unavailable(batch, exc)
                else:
                    held = await self._guarded(batch)
            else:
                held = await self._guarded(batch) if batch else []
            self.held = len(held)
            if not held:
                backoff = RECONNECT_FIRST_S
            if stopping and (not held or tried_after_stop):
                break
            tried_after_stop = stopping
            if held:  # the database is away (or a commit failed): tried again, backing off
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_CAP_S)
        if held:
            log.error(
                "journal: stopping with %d updates not written (%s); their tasks resume from "
                "their last journaled state and no payload of theirs was deleted",
                sum(1 for item in held if item.kind == "update"),
                self.fault,
            )
            error = JournalUnavailableError(self.fault or "journal stopped")
            for item in held:
                _resolve(item.future, error, True)

    async def _guarded(self, batch: list[_Item]) -> list[_Item]:
        """``_commit``, and the writer never dies of a surprise: what it did not expect is
        logged and the batch handled as a failed commit (its updates held)."""
        try:
            return await self._commit(batch)
        except Exception as exc:
            log.exception("journal: unexpected failure of a commit")
            return self._failed(batch, exc)

    async def _commit(self, batch: list[_Item]) -> list[_Item]:
        """Runs ``batch`` in one transaction; returns what is held for the next try."""
        writes = any(item.kind in ("write", "insert", "update") for item in batch)
        try:
            try:
                results = await self._attempt(batch, writes)
            except _Unavailable:
                if self.fault:
                    raise
                # a connection that broke while idle (the server restarted a while ago): one
                # fresh connection before anyone is told the database is away. Redoing is
                # safe: updates set values, and a row that did commit is found as its own
                self._discard()
                self._drop_connection()
                self.conn = await self._connect_or_unavailable()
                results = await self._attempt(batch, writes)
        except _Fenced as exc:
            self._discard()
            return self._refused(batch, str(exc.__cause__ or exc))
        except _Unavailable as exc:
            self._discard()
            return self._unavailable(batch, exc.__cause__ or exc)
        except Exception as exc:  # the hooks or the COMMIT failed: no operation's fault
            self._discard()
            return self._failed(batch, exc)
        for hook in self.hooks:
            hook.committed()
        if writes:
            self.sequence += 1
        if self.fault:
            log.warning("journal: the database is back (%d operations were held)", len(batch))
            self.fault = ""
        self.commits += 1
        self.ops += len(batch)
        for item, (value, failed) in zip(batch, results, strict=True):
            if item.then is not None:
                try:
                    item.then()
                except Exception:
                    log.exception("journal: after-commit action failed")
            if item.future is None and failed:
                log.error("journal update failed: %s", value)
            _resolve(item.future, value, failed)
        return []

    async def _attempt(self, batch: list[_Item], writes: bool) -> list[tuple[Any, bool]]:
        """The batch in one transaction; a failed operation makes it redo each in its own
        savepoint. Raises ``_Unavailable``, ``_Fenced`` or what the hooks or COMMIT met."""
        try:
            return await self._transaction(self.conn, batch, writes, isolated=False)
        except (_Unavailable, _Fenced):
            raise
        except Exception:  # one bad operation must not sink the batch: one by one
            self._discard()
            return await self._transaction(self.conn, batch, writes, isolated=True)

    async def _connect_or_unavailable(self) -> Any:
        try:
            return await self._connect()
        except Exception as exc:
            raise _Unavailable(str(exc)) from exc

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    async def _transaction(
        self, conn: Any, batch: list[_Item], writes: bool, isolated: bool
    ) -> list[tuple[Any, bool]]:
        """BEGIN, the fence, every operation (``isolated``: each in its own savepoint), the
        hooks, COMMIT. Raises ``_Unavailable``/``_Fenced``, or the first operation's error
        when not isolated (the transaction is rolled back)."""
        try:
            try:
                if writes and self._fence is not None:  # one round trip for both (an int)
                    await conn.execute(f"BEGIN; SELECT edgesched_fence({int(self._fence)})")
                else:
                    await conn.execute("BEGIN")
                results = await self._operations(conn, batch, isolated)
                for hook in self.hooks if writes else []:  # a read-only turn writes nothing
                    write_staged = getattr(hook, "write_staged", None)
                    if write_staged is not None:
                        await write_staged(conn)
                    else:
                        hook.before_commit()
                await conn.execute("COMMIT")
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            if is_fenced(exc):
                raise _Fenced(str(exc)) from exc
            if is_unavailable(exc) or conn.is_closed():
                raise _Unavailable(str(exc)) from exc
            raise
        return results

    async def _operations(
        self, conn: Any, batch: list[_Item], isolated: bool
    ) -> list[tuple[Any, bool]]:
        results: list[tuple[Any, bool]] = []
        i = 0
        while i < len(batch):
            item = batch[i]
            if item.kind == "update" and not isolated:
                j = i + 1
                while j < len(batch) and batch[j].kind == "update" and batch[j].sql == item.sql:
                    j += 1
                if j - i == 1:
                    await conn.execute(item.sql, *item.args)
                else:
                    await conn.executemany(item.sql, [b.args for b in batch[i:j]])
                results.extend((None, False) for _ in range(j - i))
                i = j
            elif item.kind == "insert" and not isolated:
                j = i + 1
                while j < len(batch) and batch[j].kind == "insert":
                    j += 1
                rows = [r for b in batch[i:j] for r in b.rows]
                outcomes = await _insert_rows(conn, rows)
                at = 0
                for b in batch[i:j]:
                    mine = outcomes[at : at + len(b.rows)]
                    at += len(b.rows)
                    results.append(_outcome(b, mine))
                i = j
            elif isolated and item.kind == "insert":
                outcomes = [await _isolated(conn, _one_insert(r)) for r in item.rows]
                results.append(_outcome(item, [v for v, _ in outcomes]))
                i += 1
            elif isolated:
                results.append(await _isolated(conn, _op_of(item)))
                i += 1
            else:
                results.append((await _op_of(item)(conn), False))
                i += 1
        return results

    def _unavailable(self, batch: list[_Item], exc: BaseException) -> list[_Item]:
        """The database went away: writes' and reads' callers get ``JournalUnavailableError``;
        updates, flushes and after-commit actions are kept, in order, for the reconnect."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, (asyncpg.InterfaceError, OSError, asyncio.TimeoutError)):
            reason = f"lost the connection to {self.where} ({reason})"
        message = f"{UNAVAILABLE}: {reason}"
        if not self.fault:
            log.error("journal %s: %s; holding updates until it returns", self.where, message)
        self.fault = message
        self._drop_connection()
        error = JournalUnavailableError(message)
        keep: list[_Item] = []
        for item in batch:
            if item.kind in ("update", "flush", "after"):
                keep.append(item)
            else:
                _resolve(item.future, error, True)
        if not keep:  # a write of nothing finds out when the database has returned
            keep.append(_Item("flush"))
        self.held = len(keep)
        return keep

    def _failed(self, batch: list[_Item], exc: Exception) -> list[_Item]:
        """A commit failed with the database there: callers of writes and reads get the
        error; updates, flushes and after-commit actions are kept, in order, and tried again."""
        message = f"journal commit failed: {exc}"
        if self.fault != message:
            log.error("journal %s: %s", self.where, message)
        self.fault = message
        error = JournalError(message)
        keep = [item for item in batch if item.kind in ("update", "flush", "after")]
        for item in batch:
            if item.kind not in ("update", "flush", "after"):
                _resolve(item.future, error, True)
        return keep or [_Item("flush")]

    def _refused(self, batch: list[_Item], message: str) -> list[_Item]:
        """The database refused this master's token: nothing of the batch is applied, nothing
        held is retried (another master leads and decides now), ``on_fenced`` hears it once."""
        first = not self.fenced
        self.fenced = message
        error = FencedError(message)
        dropped = sum(1 for item in batch if item.kind in ("update", "after"))
        for item in batch:
            _resolve(item.future, error, True)
        if first:
            log.error("journal: %s; %d held updates dropped", message, dropped)
            if self.on_fenced is not None:
                try:
                    self.on_fenced(message)
                except Exception:
                    log.exception("journal: on_fenced failed")
        # what was queued meanwhile is refused the same way at the next turn
        return []

    def _discard(self) -> None:
        for hook in self.hooks:
            try:
                hook.discard()
            except Exception:
                log.exception("journal: a commit hook failed to discard its batch")


def _op_of(item: _Item) -> Op:
    if item.kind == "update":
        sql, args = item.sql, item.args

        async def update(conn: Any) -> None:
            await conn.execute(sql, *args)

        return update
    if item.op is not None:
        return item.op
    return _noop


async def _noop(conn: Any) -> None:
    return None


def _outcome(item: _Item, outcomes: list[Any]) -> tuple[Any, bool]:
    """An insert item's result: insert_many's list, or insert's one outcome (failed when it is
    an exception)."""
    if item.many:
        return outcomes, False
    value = outcomes[0]
    return value, isinstance(value, Exception)


async def _isolated(conn: Any, op: Op) -> tuple[Any, bool]:
    """One operation inside its own savepoint: its failure undoes it alone."""
    await conn.execute("SAVEPOINT op")
    try:
        value = await op(conn)
    except Exception as exc:
        if is_unavailable(exc) or is_fenced(exc) or conn.is_closed():
            raise
        await conn.execute("ROLLBACK TO SAVEPOINT op")
        await conn.execute("RELEASE SAVEPOINT op")
        return exc, True
    await conn.execute("RELEASE SAVEPOINT op")
    return value, False


def _one_insert(entry: tuple[TaskRow, Before | None]) -> Op:
    async def op(conn: Any) -> Any:
        outcome = (await _insert_rows(conn, [entry], single=True))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return op


async def _insert_rows(
    conn: Any, rows: list[tuple[TaskRow, Before | None]], single: bool = False
) -> list[Any]:
    """Inserts ``rows`` with one statement: per row (row, False), or for a repeated key the
    row the key names (row, True), or the exception its ``before`` raised. Each ``before``
    runs first (it stages the payload and may set ``payload_path``); its undo runs when the
    row is not inserted. A failing statement undoes every staged entry and raises."""
    outcomes: list[Any] = [None] * len(rows)
    undos: list[Callable[[], None] | None] = [None] * len(rows)
    todo: list[int] = []
    for i, (_, before) in enumerate(rows):
        try:
            undos[i] = before() if before is not None else None
        except Exception as exc:
            outcomes[i] = exc
            continue
        todo.append(i)
    if not todo:
        return outcomes
    try:
        if single and len(todo) == 1:
            record = await conn.fetchrow(INSERT_ONE, *encode_row(rows[todo[0]][0]))
            inserted = {str(record[0])} if record is not None else set()
        else:
            encoded = [encode_row(rows[i][0]) for i in todo]
            columns = [list(c) for c in zip(*encoded, strict=True)]
            inserted = {str(r[0]) for r in await conn.fetch(INSERT_MANY, *columns)}
    except BaseException:
        for i in todo:
            undo = undos[i]
            if undo is not None:
                undo()
        raise
    missing: list[int] = []
    taken: set[str] = set()
    for i in todo:
        row = rows[i][0]
        if row.id in inserted and row.id not in taken:
            taken.add(row.id)
            outcomes[i] = (row, False)
        else:
            missing.append(i)
    # (a key held by this very row: a redo after a commit whose outcome was unknown found it
    # committed; it is the caller's own row, not a duplicate)
    if missing:
        for i in reversed(missing):  # the latest staged first (the payload log's order)
            undo = undos[i]
            if undo is not None:
                undo()
        records = await conn.fetch(
            BY_KEYS,
            [rows[i][0].client_id for i in missing],
            [rows[i][0].idem_key for i in missing],
        )
        found = {(str(r["client_id"]), str(r["idem_key"])): decode_row(r) for r in records}
        for i in missing:
            row = rows[i][0]
            existing = found.get((row.client_id, row.idem_key))
            if existing is None:  # cannot happen: a skipped row's key is held by another
                outcomes[i] = JournalError(f"task {row.id}: not inserted and its key not found")
            elif existing.id == row.id:
                outcomes[i] = (row, False)
            else:
                outcomes[i] = (existing, True)
    return outcomes


def _resolve(future: asyncio.Future[Any] | None, value: Any, failed: bool) -> None:
    if future is None or future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)


__all__ = ["COLUMNS", "PostgresJournal", "SqlHook", "redact"]
