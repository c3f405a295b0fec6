"""Several masters, one leader, in process: the standby's answers (gRPC status + metadata on
the client API, the agent link and the seed's upload; HTTP 503 JSON, /healthz too), the
standby → leader → standby cycle on the real PostgreSQL lease, deposition.

Until the PostgreSQL journal is in this build the leader journals in SQLite in its data
directory: where tasks must move with the lead, the masters share one data directory (only the
leader writes it), since the point here is the roles, not the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edgesched.client.send import task_stub
from edgesched.config import Settings
from edgesched.master.lease import Holder, Leader, Lease
from edgesched.master.roles import Roles, advertised, leader_server
from edgesched.master.server import MasterServer
from edgesched.master.standby import StandbyServers
from edgesched.master.token import read_token, write_token
from edgesched.masters import LEADER_HTTP_KEY, LEADER_KEY
from edgesched.tools.testing.pgserver import PgServer
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import agent_pb2, agent_pb2_grpc
from edgesched.wire import tasks

LIMIT_S = 60  #: every wait here is bounded; none is a speed target


def settings_for(data_dir: Path, dsn: str, host: str = "127.0.0.1", **master: object) -> Settings:
    settings = Settings()
    m = settings.master
    m.bind = host
    m.port = 0
    m.http_port = 0
    m.data_dir = str(data_dir)
    m.journal = dsn
    m.lease_s = 2.0
    m.lease_renew_s = 0.1
    for key, value in master.items():
        setattr(m, key, value)
    return settings


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(LIMIT_S * 20):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not in {LIMIT_S} s: {what}")


class Running:
    """Roles run as a task; stopped (SIGTERM's path) at the end of the test."""

    def __init__(self, roles: Roles) -> None:
        self.roles = roles
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(roles.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, LIMIT_S)


@pytest.fixture
async def start() -> AsyncIterator[Callable[[Roles], Running]]:
    running: list[Running] = []

    def starter(roles: Roles) -> Running:
        running.append(Running(roles))
        return running[-1]

    yield starter
    for each in reversed(running):
        await each.close()


# ---- the standby's answers ---------------------------------------------------------------

LEADS = Holder(7, "m1", Leader("127.0.0.2", 1234, 5678))


@pytest.fixture
async def standby(tmp_path: Path) -> AsyncIterator[tuple[StandbyServers, list[Holder | None]]]:
    view: list[Holder | None] = [LEADS]
    servers = StandbyServers(settings_for(tmp_path, ""), lambda: view[0])
    await servers.start()
    yield servers, view
    await servers.stop()


async def test_standby_grpc_answers_every_service_with_the_leader(standby) -> None:
    servers, view = standby
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        request = tasks.submit_request(
            client_id="c", idempotency_key="k", task_type="layout", filename="a.png", payload=b"x"
        )
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "client API": lambda: task_stub(channel).Submit(request, timeout=10),
            "agent link": lambda: _first(
                agent_pb2_grpc.AgentLinkStub(channel).Connect(
                    iter([agent_pb2.AgentMessage()]), timeout=10
                )
            ),
            "seed upload": lambda: channel.unary_unary("/ImageUpload/UploadImage")(
                b"{}", timeout=10
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            error = refused.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE, name
            assert error.details().startswith("standby master: the leader is at 127.0.0.2:1234")
            trailing = dict(error.trailing_metadata() or ())
            assert trailing[LEADER_KEY] == "127.0.0.2:1234", name
            assert trailing[LEADER_HTTP_KEY] == "127.0.0.2:5678", name

        view[0] = None  # nobody elected yet: no metadata, and the text says so
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await calls["client API"]()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no leader is elected yet" in refused.value.details()
        assert LEADER_KEY not in dict(refused.value.trailing_metadata() or ())

        view[0] = Holder(8, "m2", None)  # the leader binds a wildcard and advertises nothing
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await calls["seed upload"]()
        assert "set master.advertise" in refused.value.details()
        assert LEADER_KEY not in dict(refused.value.trailing_metadata() or ())


async def _first(stream: Any) -> object:
    async for message in stream:
        return message
    return None


async def test_standby_http_answers_503_with_the_leader(standby) -> None:
    servers, view = standby
    base = f"http://127.0.0.1:{servers.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for method, path in [
            ("GET", "/healthz"),
            ("GET", "/api/v1/link"),
            ("GET", "/api/v1/tasks"),
            ("POST", "/api/v1/tasks"),
            ("POST", "/schedule"),
            ("GET", "/"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 503, path
            body = response.json()
            assert body["role"] == "standby"
            assert body["error"].startswith("standby master: the leader is at 127.0.0.2:1234")
            assert body["leader"] == {"host": "127.0.0.2", "grpc_port": 1234, "http_port": 5678}
        view[0] = None
        body = (await client.get("/healthz")).json()
        assert body["leader"] is None and "no leader" in body["error"]


def test_advertised_address() -> None:
    s = Settings()
    s.master.bind = "127.0.0.3"
    assert advertised(s, 1, 2) == '{"host": "127.0.0.3", "grpc_port": 1, "http_port": 2}'
    s.master.bind = "0.0.0.0"
    assert advertised(s, 1, 2) == ""
    s.master.advertise = "10.0.0.5"
    assert '"host": "10.0.0.5"' in advertised(s, 1, 2)


# ---- the role cycle on the real lease ----------------------------------------------------


async def health(roles: Roles) -> httpx.Response:
    host = roles.settings.master.bind
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://{host}:{roles.http_port}/healthz")


async def test_two_masters_one_leads_then_the_other_restores_its_tasks(
    tmp_path: Path, pg_dsn: str, start
) -> None:
    shared = tmp_path / "shared"  # one data directory: journal and payloads move with the lead
    first = Roles(settings_for(shared, pg_dsn, "127.0.0.1"))
    a = start(first)
    await asyncio.wait_for(first.elected.wait(), LIMIT_S)
    second = Roles(settings_for(shared, pg_dsn, "127.0.0.2"))
    b = start(second)
    await until(lambda: second.role == "standby" and second.holder is not None, "b standby")

    leader_health = await health(first)
    assert leader_health.status_code == 200 and leader_health.json()["role"] == "leader"
    standby_health = await health(second)
    assert standby_health.status_code == 503
    assert standby_health.json()["leader"] == {
        "host": "127.0.0.1",
        "grpc_port": first.grpc_port,
        "http_port": first.http_port,
    }

    token = read_token(shared, "api")
    assert token
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        ids = []
        for i in range(3):
            request = tasks.submit_request(
                client_id="c",
                idempotency_key=f"k{i}",
                task_type="layout",
                filename=f"{i}.png",
                payload=png_bytes(),
            )
            reply = await task_stub(channel).Submit(
                request, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
            )
            ids.append(reply.task_id)

    await a.close()  # SIGTERM's path: the master stops and gives the lease up
    await asyncio.wait_for(second.elected.wait(), LIMIT_S)
    assert second.server is not None and second.server.master is not None
    assert set(ids) <= set(second.server.master.rows)
    after = await health(second)
    assert after.status_code == 200 and after.json()["role"] == "leader"
    await b.close()


async def test_a_leader_whose_lease_is_taken_steps_down_and_answers_as_standby(
    tmp_path: Path, pg_dsn: str, pg_server: PgServer, start
) -> None:
    roles = Roles(settings_for(tmp_path / "m", pg_dsn))
    start(roles)
    await asyncio.wait_for(roles.elected.wait(), LIMIT_S)
    grpc_port, http_port = roles.grpc_port, roles.http_port
    database = pg_dsn.rsplit("/", 1)[1]
    pg_server.psql(database, "UPDATE lease SET expires_at = now() - interval '1 second'")
    other = Lease(pg_dsn, "other", '{"host": "127.0.0.9", "grpc_port": 1, "http_port": 2}', 0.01)
    try:
        assert await other.take()
        other.lease_s = 3600.0
        assert await other.renew()
        await until(lambda: roles.role == "standby" and roles.holder is not None, "standby")
        assert roles.server is None and roles.terms == 1
        assert (roles.grpc_port, roles.http_port) == (grpc_port, http_port)  # the same ports
        answer = await health(roles)
        assert answer.status_code == 503 and answer.json()["leader"]["host"] == "127.0.0.9"
        await other.step_down()
        await asyncio.wait_for(roles.elected.wait(), LIMIT_S)  # and back when it may
        assert roles.terms == 2
        assert (await health(roles)).json()["role"] == "leader"
    finally:
        await other.close()


async def test_a_fenced_journal_write_makes_the_leader_step_down(
    tmp_path: Path, pg_dsn: str, pg_server: PgServer, start
) -> None:
    fenced: list[Callable[[str], None]] = []
    tokens: list[int] = []

    def make_server(
        settings: Settings, fence: int, on_fenced: Callable[[str], None]
    ) -> MasterServer:
        fenced.append(on_fenced)
        tokens.append(fence)
        return leader_server(settings, fence, on_fenced)

    # renewals are far apart: the step down below is the journal's doing, not the renewal's
    roles = Roles(
        settings_for(tmp_path / "m", pg_dsn, lease_s=600.0, lease_renew_s=300.0),
        make_server=make_server,
    )
    start(roles)
    await asyncio.wait_for(roles.elected.wait(), LIMIT_S)
    assert tokens == [roles.lease.token]
    database = pg_dsn.rsplit("/", 1)[1]
    pg_server.psql(database, "UPDATE lease SET expires_at = now() - interval '1 second'")
    other = Lease(pg_dsn, "other", "", 0.01)
    try:
        assert await other.take()
        other.lease_s = 3600.0
        assert await other.renew()
        fenced[0]("edgesched: fenced: write token 1 is not the lease's")
        await until(lambda: roles.role == "standby" and roles.server is None, "stepped down")
        await until(lambda: roles.holder is not None and roles.holder.holder == "other", "read")
        assert not roles.elected.is_set()
    finally:
        await other.close()


async def test_tokens_are_shared_through_the_database(
    tmp_path: Path, pg_dsn: str, pg_server: PgServer, start
) -> None:
    first = Roles(settings_for(tmp_path / "a", pg_dsn))
    a = start(first)
    await asyncio.wait_for(first.elected.wait(), LIMIT_S)
    second = Roles(settings_for(tmp_path / "b", pg_dsn, "127.0.0.2"))
    b = start(second)
    await until(lambda: second.holder is not None, "b standby")
    assert read_token(tmp_path / "b", "join") is None  # a standby has no tokens of its own
    rotated = write_token(tmp_path / "a", "api")  # `edgesched token rotate --api` on the leader
    database = pg_dsn.rsplit("/", 1)[1]
    query = "SELECT value FROM secrets WHERE name = 'api-token'"
    await until(lambda: pg_server.psql(database, query).strip() == rotated, "rotation shared")
    await a.close()
    await asyncio.wait_for(second.elected.wait(), LIMIT_S)
    for kind in ("join", "api"):
        assert read_token(tmp_path / "a", kind) == read_token(tmp_path / "b", kind)
        assert read_token(tmp_path / "b", kind)
    assert read_token(tmp_path / "b", "api") == rotated
    await b.close()


# ---- the database going away -------------------------------------------------------------


@pytest.fixture
def own_pg(pg_server: PgServer) -> Iterator[PgServer]:
    """A server of the test's own (stopped and restarted: not the session's shared one)."""
    server = PgServer(durable=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_postgres_restart_keeps_the_leader(tmp_path: Path, own_pg: PgServer, start) -> None:
    dsn = own_pg.create_database("ha")
    # a long lease: the grace after the restart outlasts any slowness of this machine
    leader = Roles(
        settings_for(tmp_path / "a", dsn, lease_s=60.0, lease_renew_s=0.1),
    )
    start(leader)
    await asyncio.wait_for(leader.elected.wait(), LIMIT_S)
    token = leader.lease.token
    standby = Roles(
        settings_for(tmp_path / "b", dsn, "127.0.0.2", lease_s=60.0, lease_renew_s=0.1),
    )
    start(standby)
    await until(lambda: standby.holder is not None, "b standby")
    await asyncio.to_thread(own_pg.restart)
    renewed = await _renewed_after_restart(own_pg, "ha")
    assert renewed
    assert leader.role == "leader" and leader.terms == 1 and leader.lease.token == token
    assert standby.role == "standby" and standby.terms == 0
    assert (await health(leader)).status_code == 200


async def _renewed_after_restart(server: PgServer, database: str) -> bool:
    """Whether the lease was renewed since the server's last start (bounded polls)."""
    query = "SELECT renewed_at > pg_postmaster_start_time() FROM lease WHERE name = 'leader'"
    for _ in range(LIMIT_S * 10):
        with contextlib.suppress(Exception):
            if (await asyncio.to_thread(server.psql, database, query)).strip() == "t":
                return True
        await asyncio.sleep(0.1)
    return False


async def test_a_master_started_while_the_database_is_down_waits_then_leads(
    tmp_path: Path, own_pg: PgServer, start
) -> None:
    dsn = own_pg.create_database("later")
    await asyncio.to_thread(own_pg.stop)
    roles = Roles(settings_for(tmp_path / "a", dsn))
    start(roles)
    await until(lambda: roles.role == "standby" and roles.standby is not None, "standby")
    answer = await health(roles)
    assert answer.status_code == 503 and "no leader is elected yet" in answer.json()["error"]
    await asyncio.to_thread(own_pg.start)
    await asyncio.wait_for(roles.elected.wait(), LIMIT_S)
    assert (await health(roles)).json()["role"] == "leader"


def test_repair_is_refused_with_a_postgresql_journal(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgesched.cli.master import master

    result = CliRunner().invoke(
        master,
        ["--journal", "postgresql://u@127.0.0.1:1/db", "--data-dir", str(tmp_path), "--repair"],
    )
    assert result.exit_code == 2
    assert "--repair mends a SQLite journal" in result.output


async def test_a_deposed_leaders_late_write_is_refused_by_the_database(
    tmp_path: Path, pg_dsn: str, pg_server: PgServer, start
) -> None:
    """Fencing end to end: the lease is taken while the leader runs (as when it froze past its
    lease); its next journal write is refused by the database, it steps down, and nothing of
    that write is in the database. Needs the PostgreSQL journal (issue 18 part A)."""
    pytest.importorskip("edgesched.journal.postgres")
    # renewals far apart: the refused write, not a renewal, is what tells the leader
    roles = Roles(settings_for(tmp_path / "m", pg_dsn, lease_s=600.0, lease_renew_s=300.0))
    start(roles)
    await asyncio.wait_for(roles.elected.wait(), LIMIT_S)
    token = read_token(tmp_path / "m", "api")
    database = pg_dsn.rsplit("/", 1)[1]
    auth = (("authorization", f"Bearer {token}"),)

    def request(key: str) -> tasks.SubmitRequest:
        return tasks.submit_request(
            client_id="c",
            idempotency_key=key,
            task_type="layout",
            filename="a.png",
            payload=png_bytes(),
        )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{roles.grpc_port}") as channel:
        await task_stub(channel).Submit(request("before"), timeout=10, metadata=auth)
        pg_server.psql(database, "UPDATE lease SET expires_at = now() - interval '1 second'")
        other = Lease(pg_dsn, "other", "", 0.01)
        try:
            assert await other.take()
            other.lease_s = 3600.0
            assert await other.renew()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await task_stub(channel).Submit(request("late"), timeout=10, metadata=auth)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            await until(lambda: roles.role == "standby" and roles.server is None, "stepped down")
        finally:
            await other.close()
    keys = pg_server.psql(database, "SELECT idem_key FROM tasks ORDER BY idem_key").split()
    assert keys == ["before"]
    assert pg_server.psql(database, "SELECT count(*) FROM payloads").strip() == "1"
