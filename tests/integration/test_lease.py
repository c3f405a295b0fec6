"""The leader's lease against a real PostgreSQL 15 (the throwaway server): who may take it,
when, renewing, stepping down, and the fence function refusing a deposed leader's write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from edgesched.errors import JournalError, JournalUnavailableError
from edgesched.master.lease import Leader, Lease
from edgesched.tools.testing.pgserver import PgServer

ADDRESS = json.dumps({"host": "127.0.0.1", "grpc_port": 9999, "http_port": 6666})
TRIES = 100  #: bounded polls while PostgreSQL forgets a closed connection's backend


async def lease(dsn: str, name: str, lease_s: float = 3600.0) -> Lease:
    held = Lease(dsn, name, ADDRESS, lease_s)
    await held.prepare()
    return held


async def take_soon(contender: Lease) -> bool:
    """A standby's tries, bounded: a backend leaves pg_stat_activity once it has exited."""
    for _ in range(TRIES):
        if await contender.take():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_one_leader_among_contenders(pg_dsn: str) -> None:
    masters = [await lease(pg_dsn, f"m{i}") for i in range(4)]
    try:
        won = await asyncio.gather(*(m.take() for m in masters))
        assert sum(won) == 1
        leader = masters[won.index(True)]
        held = await masters[0].read()
        assert held.holder == leader.instance and held.token == leader.token >= 1
        assert held.leader == Leader("127.0.0.1", 9999, 6666)
        # a second round changes nothing: the leader's connection lives and its lease runs
        assert not any(await asyncio.gather(*(m.take() for m in masters if m is not leader)))
    finally:
        for m in masters:
            await m.close()


async def test_schema_prepared_twice_and_concurrently(pg_dsn: str) -> None:
    masters = [Lease(pg_dsn, f"m{i}", ADDRESS, 5.0) for i in range(3)]
    try:
        await asyncio.gather(*(m.prepare() for m in masters))
        await masters[0].prepare()
        assert (await masters[0].read()).holder == ""
    finally:
        for m in masters:
            await m.close()


async def test_takeover_when_the_leaders_connection_dies(pg_dsn: str) -> None:
    a, b = await lease(pg_dsn, "a"), await lease(pg_dsn, "b")
    try:
        assert await a.take()
        first = a.token
        assert not await b.take()
        (await a.connection()).terminate()  # as a SIGKILLed master's socket closing
        assert await take_soon(b)
        assert b.token == first + 1
        assert not await a.renew()  # a came back: its token is not the lease's any more
        assert a.token == 0
    finally:
        await a.close()
        await b.close()


async def test_live_but_silent_leader_keeps_the_lease_until_it_expires(
    pg_dsn: str, pg_server: PgServer
) -> None:
    a, b = await lease(pg_dsn, "a"), await lease(pg_dsn, "b", lease_s=0.01)
    try:
        assert await a.take()
        for _ in range(3):
            assert not await b.take()
        # the database's clock moves past the lease (a frozen leader renewed no more)
        database = pg_dsn.rsplit("/", 1)[1]
        pg_server.psql(database, "UPDATE lease SET expires_at = now() - interval '1 second'")
        assert await b.take()
        assert (await b.read()).holder == "b"
        assert not await a.renew()
    finally:
        await a.close()
        await b.close()


async def test_renew_extends_and_lost_when_taken(pg_dsn: str, pg_server: PgServer) -> None:
    a = await lease(pg_dsn, "a", lease_s=5.0)
    try:
        assert not await a.renew()  # holds nothing yet
        assert await a.take()
        assert await a.renew()
        database = pg_dsn.rsplit("/", 1)[1]
        pg_server.psql(database, "UPDATE lease SET token = token + 1")
        assert not await a.renew()
        assert a.token == 0
    finally:
        await a.close()


async def test_step_down_lets_a_standby_take_over_at_once(pg_dsn: str) -> None:
    a, b = await lease(pg_dsn, "a"), await lease(pg_dsn, "b")
    try:
        assert await a.take()
        assert not await b.take()
        await a.step_down()
        assert (await b.read()).holder == ""
        assert await b.take()
        assert not await a.renew()
    finally:
        await a.close()
        await b.close()


async def test_fence_refuses_a_deposed_leaders_write(pg_dsn: str) -> None:
    a, b = await lease(pg_dsn, "a"), await lease(pg_dsn, "b")
    writer = await asyncpg.connect(pg_dsn)
    try:
        await writer.execute("CREATE TABLE sample (v INTEGER)")
        assert await a.take()
        async with writer.transaction():
            await writer.execute("SELECT edgesched_fence($1)", a.token)
            await writer.execute("INSERT INTO sample VALUES (1)")
        old = a.token
        await a.step_down()
        assert await b.take()
        with pytest.raises(asyncpg.PostgresError) as refused:
            async with writer.transaction():
                await writer.execute("SELECT edgesched_fence($1)", old)
                await writer.execute("INSERT INTO sample VALUES (2)")
        assert refused.value.sqlstate == "EF001"
        assert "fenced" in str(refused.value)
        assert [r["v"] for r in await writer.fetch("SELECT v FROM sample")] == [1]
    finally:
        await writer.close()
        await a.close()
        await b.close()


async def test_postgres_restart_gives_the_leader_a_lease_to_come_back(
    pg_server: PgServer,
) -> None:
    server = PgServer(durable=False)  # its own: the session's server is not restarted under others
    try:
        server.start()
        dsn = server.create_database("restart")
        a, b = await lease(dsn, "a", lease_s=3600.0), await lease(dsn, "b", lease_s=3600.0)
        eager = await lease(dsn, "eager", lease_s=0.001)  # its grace is over at once
        assert await a.take()
        server.psql("restart", "UPDATE lease SET expires_at = now() - interval '1 second'")
        server.restart()
        # every connection died with the server: a's pid is gone, its lease expired, but the
        # database started less than a lease ago: nobody takes over, a renews on a new one
        for _ in range(3):
            assert not await _retrying(b.take)
        assert await _retrying(a.renew)
        await a.step_down()
        server.restart()
        assert await _retrying(eager.take)
        for held in (a, b, eager):
            await held.close()
    finally:
        server.close()


async def _retrying(call: Callable[[], Awaitable[bool]]) -> bool:
    """The call once the database takes connections again (bounded)."""
    for _ in range(TRIES):
        try:
            return bool(await call())
        except JournalUnavailableError:
            await asyncio.sleep(0.05)
    raise AssertionError("the database did not come back")


def test_leader_address_parsing() -> None:
    assert Leader.parse(ADDRESS) == Leader("127.0.0.1", 9999, 6666)
    assert Leader.parse("") is None
    assert Leader.parse("{") is None
    assert Leader.parse('{"host": ""}') is None
    assert Leader.parse('{"host": "h", "grpc_port": "x"}') is None


async def test_a_takeover_waits_for_the_leaders_running_write(
    pg_dsn: str, pg_server: PgServer
) -> None:
    """A write is either before the takeover (committed, the new leader sees it) or refused."""
    a, b = await lease(pg_dsn, "a"), await lease(pg_dsn, "b", lease_s=0.01)
    writer = await asyncpg.connect(pg_dsn)
    try:
        await writer.execute("CREATE TABLE sample (v INTEGER)")
        assert await a.take()
        database = pg_dsn.rsplit("/", 1)[1]
        pg_server.psql(database, "UPDATE lease SET expires_at = now() - interval '1 second'")
        running = writer.transaction()
        await running.start()
        await writer.execute("SELECT edgesched_fence($1)", a.token)
        await writer.execute("INSERT INTO sample VALUES (1)")
        taking = asyncio.create_task(b.take())
        await asyncio.sleep(0.3)
        assert not taking.done()  # held by the write's share lock on the lease row
        await running.commit()
        assert await asyncio.wait_for(taking, 30)
        assert [r["v"] for r in await writer.fetch("SELECT v FROM sample")] == [1]
        with pytest.raises(asyncpg.PostgresError) as refused:
            async with writer.transaction():
                await writer.execute("SELECT edgesched_fence($1)", a.token)
        assert refused.value.sqlstate == "EF001"
    finally:
        await writer.close()
        await a.close()
        await b.close()


async def test_a_lease_table_of_another_shape_is_a_clear_error(
    pg_dsn: str, pg_server: PgServer
) -> None:
    pg_server.psql(pg_dsn.rsplit("/", 1)[1], "CREATE TABLE lease (x INTEGER)")
    held = Lease(pg_dsn, "a", ADDRESS, 5.0)
    try:
        with pytest.raises(JournalError, match="cannot create the lease") as refused:
            await held.prepare()
        assert not isinstance(refused.value, JournalUnavailableError)  # not "try again"
    finally:
        await held.close()
