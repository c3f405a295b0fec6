"""A master on the PostgreSQL journal with real agents and a real throwaway server: payloads
in the database, a restarted master dispatching from it, and the database going away in the
middle of a run (refused submissions, agents kept, nothing acknowledged lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from edgesched.master.payloadstore import is_db_ref
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pgserver import PgServer
from edgesched.tools.testing.pictures import png_bytes


async def until(predicate: Callable[[], bool], limit_s: float = 30) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def payload_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM payloads"))
    finally:
        await conn.close()


async def test_payloads_live_in_the_database_and_a_restarted_master_sends_them(
    tmp_path: Path, pg_dsn: str
) -> None:
    settings = master_settings(tmp_path, journal=pg_dsn)
    cluster = InProcessCluster(tmp_path, settings)
    await cluster.start()
    try:  # no agent: the tasks wait, journaled with their payload in the database
        ids = [(await cluster.submit(f"k{i}", png_bytes(16, 16 + i))).task_id for i in range(4)]
        rows = [await cluster.master.journal.get(task_id) for task_id in ids]
        assert all(r is not None and is_db_ref(r.payload_path) for r in rows), rows
        assert await payload_rows(pg_dsn) == 4
        assert not (tmp_path / "master" / "payloads").exists() or not list(
            (tmp_path / "master" / "payloads").iterdir()
        )
    finally:
        await cluster.close()
    # another master process (a fresh data dir: nothing of the first one's files) takes over
    other = InProcessCluster(tmp_path / "b", master_settings(tmp_path / "b", journal=pg_dsn))
    await other.start()
    try:
        await other.add_agent("a1")
        results = await other.wait(ids, limit_s=60)
        assert {r.state for r in results.values()} == {2} or all(
            r.task_id in ids for r in results.values()
        )
        await until(lambda: all(i not in other.master.rows for i in ids))
        journaled = [await other.master.journal.get(i) for i in ids]
        assert all(r is not None and r.state == "done" for r in journaled), journaled
        await other.master.journal.flush()
        await until(lambda: other.master.journal.held == 0)
        await other.master.journal.flush()  # the release's delete is a later turn
        assert await payload_rows(pg_dsn) == 0
    finally:
        await other.close()


async def test_the_database_going_away_mid_run_loses_nothing_acknowledged(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    cluster = InProcessCluster(tmp_path, master_settings(tmp_path, journal=pg_dsn))
    await cluster.start()
    try:
        agents = [await cluster.add_agent(f"a{i}") for i in range(2)]
        acknowledged = [
            (await cluster.submit(f"k{i}", png_bytes(16, 16 + i % 8))).task_id for i in range(30)
        ]
        sessions = dict(cluster.master.sessions)
        pg_server.stop()
        refused = 0
        for i in range(30, 80):  # submissions while the database is away: refused, never lost
            try:
                reply = await cluster.submit(f"k{i}", png_bytes(16, 16 + i % 8))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                assert "database unavailable" in (exc.details() or "")
                refused += 1
            else:
                acknowledged.append(reply.task_id)
            await asyncio.sleep(0.02)
        assert refused > 0
        health = (await cluster.get("/healthz")).json()
        assert health["status"] == "degraded" and "database unavailable" in health["reason"]
        listed = await cluster.get("/api/v1/tasks?state=done")  # a read that needs it
        assert listed.status_code == 503 and "database unavailable" in listed.json()["msg"]
        await asyncio.sleep(0.5)
        assert all(a.connected.is_set() for a in agents)
        assert cluster.master.sessions.keys() == sessions.keys()  # the agents stayed linked
        pg_server.start()
        await until(lambda: not cluster.master.journal.fault, 60)
        for i in range(80, 90):  # it carries on
            acknowledged.append((await cluster.submit(f"k{i}", png_bytes(16, 16))).task_id)
        await until(lambda: all(i not in cluster.master.rows for i in acknowledged), 60)
        await cluster.master.journal.flush()
        for task_id in acknowledged:
            row = await cluster.master.journal.get(task_id)
            assert row is not None and row.state == "done", (task_id, row)
        assert cluster.master.finished_total.get("done", 0) == len(acknowledged)  # once each
        assert all(a.connected.is_set() for a in agents)
    finally:
        if not pg_server._running():
            pg_server.start()
        await cluster.close()


def test_repair_is_refused_for_a_postgresql_journal(tmp_path: Path) -> None:
    from edgesched.errors import ConfigError
    from edgesched.master.repair import repair

    settings = master_settings(tmp_path, journal="postgresql://u:pw@127.0.0.1:1/db")
    with pytest.raises(ConfigError, match="SQLite"):
        asyncio.run(repair(settings))


def test_a_missing_driver_is_named_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgesched import extras
    from edgesched.errors import ConfigError
    from edgesched.journal.sqlite import SQLiteJournal
    from edgesched.master.payloadlog import PayloadLog
    from edgesched.master.stores import open_stores

    journal, store = open_stores(master_settings(tmp_path))  # the default: SQLite
    assert isinstance(journal, SQLiteJournal) and isinstance(store, PayloadLog)
    monkeypatch.setattr(extras, "missing", lambda extra: ["asyncpg"])
    with pytest.raises(ConfigError, match=r"pip install 'edgesched\[postgres\]'"):
        open_stores(master_settings(tmp_path, journal="postgresql://127.0.0.1:1/db"))


async def test_a_seed_upload_keeps_its_file_and_its_bytes_go_into_the_database(
    tmp_path: Path, pg_dsn: str
) -> None:
    from edgesched.master.submission import Submission

    cluster = InProcessCluster(tmp_path, master_settings(tmp_path, journal=pg_dsn))
    await cluster.start()
    try:
        upload = tmp_path / "up.png"
        data = png_bytes(16, 16)
        upload.write_bytes(data)
        row, duplicate = await cluster.master.submit(
            Submission(
                client_id="10.0.0.9",
                idem_key="seed-upload:up.png",
                task_type="layout",
                filename="up.png",
                payload=data,
                origin="seed",
                client_addr="10.0.0.9",
                payload_path=str(upload),
            )
        )
        assert not duplicate and row.payload_path == str(upload)
        assert await payload_rows(pg_dsn) == 1
        assert await cluster.master.read_payload(row) == data
    finally:
        await cluster.close()
