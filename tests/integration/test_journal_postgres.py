"""What only the PostgreSQL journal does, against a real throwaway server: fencing, the
database going away and coming back, migrations (several masters at once, a newer schema)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from edgesched.errors import FencedError, JournalError, JournalUnavailableError
from edgesched.journal import TaskRow
from edgesched.journal.postgres import PostgresJournal, redact
from edgesched.tools.testing.pgserver import PgServer


def row(task_id: str, key: str) -> TaskRow:
    return TaskRow(
        id=task_id,
        client_id="c",
        idem_key=key,
        task_type="layout",
        filename="a.png",
        payload_path="/tmp/x",
        payload_size=3,
        submitted_ms=1,
    )


async def until(check: Any, limit: int = 400) -> None:
    """Polls ``check`` (bounded in count: 400 × 50 ms)."""
    for _ in range(limit):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met")


async def test_a_write_with_a_token_that_is_no_longer_the_lease_is_refused(pg_dsn: str) -> None:
    journal = PostgresJournal(pg_dsn)
    await journal.start()
    told: list[str] = []
    journal.on_fenced = told.append
    try:
        journal.fence = 0  # the lease's token as migration 1 leaves it
        await journal.insert(row("t1", "k1"))
        other = await asyncpg.connect(pg_dsn)
        try:
            await other.execute("UPDATE lease SET token = token + 1 WHERE name = 'leader'")
        finally:
            await other.close()
        ran: list[str] = []
        journal.update("t1", {"state": "done"})
        journal.after_commit(lambda: ran.append("after"))
        with pytest.raises(FencedError, match="fenced"):
            await journal.insert(row("t2", "k2"))
        with pytest.raises(FencedError):  # refused at once from now on
            await journal.insert(row("t3", "k3"))
        journal.update("t1", {"state": "dead"})  # dropped: never retried
        assert len(told) == 1 and "is not the lease's" in told[0]
        assert ran == []
        stored = await journal.get("t1")  # reads still answer
        assert stored is not None and stored.state == "queued"
        assert await journal.task_ids() == {"t1"}
        journal.fence = 1  # a new term with the lease's token: writes go again
        await journal.insert(row("t4", "k4"))
        await journal.flush()
        assert await journal.task_ids() == {"t1", "t4"}
        stored = await journal.get("t1")
        assert stored is not None and stored.state == "queued"
    finally:
        await journal.close()


async def test_the_database_going_away_holds_updates_and_refuses_new_work(
    pg_server: PgServer, pg_dsn: str
) -> None:
    journal = PostgresJournal(pg_dsn)
    await journal.start()
    try:
        await journal.insert(row("t1", "k1"))
        pg_server.stop()
        ran: list[str] = []
        journal.update("t1", {"state": "done", "label": "x"})
        journal.after_commit(lambda: ran.append("after"))
        flushed = asyncio.ensure_future(journal.flush())
        await until(lambda: journal.fault)
        assert journal.fault.startswith("database unavailable")
        with pytest.raises(JournalUnavailableError, match="database unavailable"):
            await journal.insert(row("t2", "k2"))
        with pytest.raises(JournalUnavailableError):
            await journal.get("t1")
        assert ran == [] and not flushed.done()
        pg_server.start()
        await asyncio.wait_for(flushed, 30)
        assert journal.fault == "" and ran == ["after"]
        stored = await journal.get("t1")
        assert stored is not None and stored.state == "done" and stored.label == "x"
        await journal.insert(row("t2", "k2"))
    finally:
        if not pg_server._running():
            pg_server.start()
        await journal.close()


async def test_masters_starting_together_migrate_once(pg_dsn: str) -> None:
    journals = [PostgresJournal(pg_dsn) for _ in range(4)]
    await asyncio.gather(*(j.start() for j in journals))
    try:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == 1
            assert await conn.fetchval("SELECT count(*) FROM lease") == 1
        finally:
            await conn.close()
    finally:
        for j in journals:
            await j.close()


async def test_a_database_of_a_newer_edgesched_is_refused(pg_dsn: str) -> None:
    first = PostgresJournal(pg_dsn)
    await first.start()
    await first.close()
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    await conn.close()
    with pytest.raises(JournalError, match="newer"):
        await PostgresJournal(pg_dsn).start()


async def test_an_unreachable_database_fails_the_start_clearly_without_the_password() -> None:
    dsn = "postgresql://user:secret@127.0.0.1:1/db"
    with pytest.raises(JournalUnavailableError) as caught:
        await PostgresJournal(dsn).start()
    assert "secret" not in str(caught.value) and "user:***@127.0.0.1:1" in str(caught.value)
    assert redact("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"


async def test_payloads_go_in_with_their_rows_and_leave_when_released_or_pruned(
    pg_dsn: str, tmp_path: Any
) -> None:
    from edgesched.errors import PayloadError
    from edgesched.master.payloadstore import DbPayloadStore

    journal = PostgresJournal(pg_dsn)
    store = DbPayloadStore(journal)
    journal.add_hook(store)
    await journal.start()

    def stage(r: TaskRow, data: bytes) -> Any:
        def before() -> Any:
            store.stage_task(r, data, journal.sequence + 1)
            return lambda: store.unstage(r.id)

        return before

    async def count() -> int:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM payloads"))
        finally:
            await conn.close()

    try:
        native = row("t1", "k1")
        native.payload_path = ""
        await journal.insert(native, stage(native, b"native bytes"))
        assert native.payload_path == "db:t1"
        upload = tmp_path / "upload.png"
        upload.write_bytes(b"file bytes")
        seed = row("t2", "k2")
        seed.payload_path = str(upload)  # a seed upload keeps its file's path
        await journal.insert(seed, stage(seed, b"seed bytes"))
        again = row("t3", "k1")
        again.payload_path = ""
        _, duplicate = await journal.insert(again, stage(again, b"never stored"))
        assert duplicate and await count() == 2
        assert await store.aread(native) == b"native bytes"
        assert await store.aread(seed) == b"seed bytes"  # any master: from the database
        assert await asyncio.to_thread(store.read, "db:t1") == b"native bytes"
        with pytest.raises(PayloadError, match="aread"):
            store.read("db:t1")  # the loop's own thread would wait on itself
        store.release(["t1"])
        await journal.flush()
        assert not await store.apresent(native) and await count() == 1
        journal.update("t2", {"state": "done", "finished_ms": 5})
        await journal.flush()
        assert [t for t, _ in await journal.prune(before_ms=10, keep_rows=100)] == ["t2"]
        assert await count() == 0
    finally:
        await journal.close()


async def test_a_restart_while_idle_costs_no_submission(pg_server: PgServer, pg_dsn: str) -> None:
    """The connection broke while nothing was written: the next write reconnects at once."""
    journal = PostgresJournal(pg_dsn)
    await journal.start()
    try:
        await journal.insert(row("t1", "k1"))
        pg_server.restart()
        stored, duplicate = await journal.insert(row("t2", "k2"))
        assert not duplicate and stored.id == "t2" and journal.fault == ""
        assert await journal.task_ids() == {"t1", "t2"}
    finally:
        if not pg_server._running():
            pg_server.start()
        await journal.close()


async def test_a_row_postgresql_refuses_fails_alone_in_its_batch(pg_dsn: str) -> None:
    """A failed statement aborts a PostgreSQL transaction: the batch is redone one item (one
    row) at a time in savepoints, so only the bad one fails."""
    journal = PostgresJournal(pg_dsn)
    await journal.start()
    try:
        await journal.insert(row("t0", "k0"))
        journal.update("t0", {"no_such_column": 1})  # fails inside the batch
        journal.update("t0", {"state": "running"})
        bad = row("t2", "k2")
        bad.filename = "nul\x00byte.png"  # text PostgreSQL refuses
        out: list[Any] = await journal.insert_many(
            [(row("t1", "k1"), None), (bad, None), (row("t3", "k3"), None)]
        )
        assert out[0][0].id == "t1" and out[2][0].id == "t3"
        assert isinstance(out[1], Exception)
        with pytest.raises(Exception, match=r"0x00|null|NUL"):
            await journal.insert(bad)
        assert await journal.task_ids() == {"t0", "t1", "t3"}
        stored = await journal.get("t0")
        assert stored is not None and stored.state == "running" and journal.fault == ""
    finally:
        await journal.close()
