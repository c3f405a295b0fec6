"""Agents and clients given several masters find the leader and follow it (issue 18, part C).

The standbys here are test doubles that answer as the contract says a standby answers (every
gRPC call UNAVAILABLE "standby master: ..." with the leader in the trailing metadata, every
HTTP route 503 with the leader in the JSON), in front of real in-process masters; the failover
is a real master stopped and another started on another loopback address, on the same data
directory (SQLite: a failover without PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edgesched.agent.agent import Agent
from edgesched.client.send import Outcome, Sender
from edgesched.config import Settings
from edgesched.kinds import TaskState
from edgesched.master.server import MasterServer
from edgesched.masters import Leader
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import free_port_on
from edgesched.wire import tasks


class StandbyGrpc:
    """A gRPC server that answers every method as a standby: UNAVAILABLE, the leader in the
    trailing metadata (none when ``leader`` is None). Counts the calls it answered."""

    def __init__(self, host: str, port: int = 0, leader: Leader | None = None) -> None:
        self.host, self.port, self.leader = host, port, leader
        self.calls = 0
        self.server: grpc.aio.Server | None = None

    async def start(self) -> StandbyGrpc:
        standby = self

        async def answer(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            standby.calls += 1
            leader = standby.leader
            trailing: tuple[tuple[str, str], ...] = ()
            where = "no leader is elected yet"
            if leader is not None:
                trailing = (
                    ("edgesched-leader", f"{leader.host}:{leader.grpc_port}"),
                    ("edgesched-leader-http", f"{leader.host}:{leader.http_port}"),
                )
                where = f"the leader is at {leader.host}:{leader.grpc_port}"
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"standby master: {where}", trailing_metadata=trailing
            )
            yield b""  # never reached: makes this an async generator (a streaming handler)

        class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: Any) -> Any:
                return grpc.stream_stream_rpc_method_handler(answer)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((Handler(),))
        self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        await self.server.start()
        return self

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


class StandbyHttp:
    """An HTTP server that answers every request as a standby's gateway: 503 and the JSON."""

    def __init__(self, host: str, port: int = 0, leader: Leader | None = None) -> None:
        self.host, self.port, self.leader = host, port, leader
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> StandbyHttp:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                leader = self.leader
                body = json.dumps(
                    {
                        "error": "standby master: see leader",
                        "role": "standby",
                        "leader": None
                        if leader is None
                        else {
                            "host": leader.host,
                            "grpc_port": leader.grpc_port,
                            "http_port": leader.http_port,
                        },
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def standbys() -> AsyncIterator[list[StandbyGrpc | StandbyHttp]]:
    """Standby doubles to start; every one is stopped at the end."""
    made: list[StandbyGrpc | StandbyHttp] = []
    yield made
    for standby in made:
        await standby.stop()


def leader_of(cluster: InProcessCluster, host: str = "127.0.0.1") -> Leader:
    assert cluster.server is not None
    return Leader(host, cluster.server.grpc_port, cluster.server.http_port)


def pictures(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"p{i:03d}.png").write_bytes(png_bytes(color=(i % 256, 30, 30)))
    return sorted(folder.iterdir())


def api_token(cluster: InProcessCluster) -> str:
    return str(cluster.master.api_token.current())


@pytest.mark.parametrize("listed", [True, False], ids=["leader-listed", "leader-not-listed"])
async def test_an_agent_given_a_standby_first_asks_it_and_links_to_the_leader(
    make_cluster, standbys, listed: bool
) -> None:
    cluster = await make_cluster()
    gateway = await StandbyHttp("127.0.0.2", leader=leader_of(cluster)).start()
    standbys.append(gateway)
    leader_http = cluster.server.http_port
    masters = f"127.0.0.2:{gateway.port}" + (f",127.0.0.1:{leader_http}" if listed else "")
    agent = await cluster.add_agent("a1", master_ip=masters)
    assert gateway.requests >= 1, "the agent asked the standby's gateway first"
    assert agent.session.linked_to == f"127.0.0.1:{cluster.server.grpc_port}"
    reply = await cluster.submit("k", png_bytes())
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    assert tasks.state_of(result) is TaskState.DONE


@pytest.mark.parametrize("listed", [True, False], ids=["leader-listed", "leader-not-listed"])
async def test_an_agent_dialling_a_standbys_link_follows_its_hint(
    make_cluster, standbys, listed: bool
) -> None:
    cluster = await make_cluster()
    port = cluster.server.grpc_port
    # the configured link port is the same on every master: the standby's link is on it too
    link = await StandbyGrpc("127.0.0.2", port, leader_of(cluster)).start()
    standbys.append(link)
    agent = await cluster.add_agent(
        "a1", master_ip="127.0.0.2" + (",127.0.0.1" if listed else ""), link_port=port
    )
    assert link.calls >= 1, "the agent dialled the standby first"
    assert agent.session.linked_to == f"127.0.0.1:{port}"


@pytest.mark.parametrize("listed", [True, False], ids=["leader-listed", "leader-not-listed"])
async def test_a_client_given_a_standby_first_gets_every_result_once(
    make_cluster, standbys, tmp_path: Path, listed: bool
) -> None:
    cluster = await make_cluster()
    await cluster.add_agent("a1")
    standby = await StandbyGrpc("127.0.0.2", leader=leader_of(cluster)).start()
    standbys.append(standby)
    sender = Sender(
        [standby.target, cluster.grpc_target] if listed else standby.target,
        "layout",
        "c1",
        timeout_s=60,
        api_token=api_token(cluster),
    )
    report = await sender.run(pictures(tmp_path / "in", 12))
    assert report.done == 12 and not report.unfinished
    assert len({o.task_id for o in report.outcomes}) == 12
    assert standby.calls >= 1, "the first call went to the standby"
    assert sender.target == cluster.grpc_target


async def test_a_client_whose_standbys_name_each_other_backs_off_and_gives_up_in_time(
    standbys, tmp_path: Path
) -> None:
    one = await StandbyGrpc("127.0.0.2").start()
    two = await StandbyGrpc("127.0.0.3").start()
    standbys.extend([one, two])
    one.leader = Leader(two.host, two.port, 1)
    two.leader = Leader(one.host, one.port, 1)
    itself = await StandbyGrpc("127.0.0.4").start()
    standbys.append(itself)
    itself.leader = Leader(itself.host, itself.port, 1)
    for targets, doubles in (([one.target, two.target], (one, two)), ([itself.target], (itself,))):
        report = await Sender(targets, "layout", "c1", timeout_s=1.5).run(
            pictures(tmp_path / "in", 3)
        )
        assert report.done == 0 and all("UNAVAILABLE" in o.refused for o in report.outcomes)
        # the backoff (≥ 0.1 s, doubling) allows at most a handful of hops each time in 1.5 s:
        # a loop of hints at the hint's pause alone would make hundreds of calls
        assert 1 <= sum(d.calls for d in doubles) <= 40


async def test_an_agent_whose_standby_names_itself_backs_off(standbys, tmp_path: Path) -> None:
    gateway = await StandbyHttp("127.0.0.2").start()
    standbys.append(gateway)
    gateway.leader = Leader("127.0.0.2", 0, gateway.port)  # no gRPC port: ask its gateway
    s = Settings()
    s.agent.master_ip, s.agent.master_port = "127.0.0.2", gateway.port
    s.agent.token, s.agent.backend, s.agent.data_dir = "t", "sleep", str(tmp_path / "a1")
    agent, stop = Agent(s), asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert not agent.connected.is_set()
    assert 1 <= gateway.requests <= 40


async def test_a_failover_to_another_address_is_followed_by_agent_and_client(
    make_cluster, tmp_path: Path
) -> None:
    """The master stops mid-run and another starts on another address on the same journal:
    the agent and a running sender follow it; each picture gets one task and its result."""
    cluster = await make_cluster(heartbeat_interval_s=0.2)
    grpc_port, http_port = cluster.server.grpc_port, cluster.server.http_port
    # the first master moves onto fixed ports (the same on both addresses, as in production)
    await cluster.channel.close()
    await cluster.server.stop()
    grpc_port, http_port = (
        free_port_on("127.0.0.1", "127.0.0.2"),
        free_port_on("127.0.0.1", "127.0.0.2"),
    )
    cluster.settings.master.port, cluster.settings.master.http_port = grpc_port, http_port
    await cluster.start()
    agent = await cluster.add_agent(
        "a1",
        master_ip="127.0.0.1,127.0.0.2",
        master_port=http_port,
        emulate="atlas310",
        time_scale=10.0,  # tasks run a while: some are running when the master goes
    )
    got: list[Outcome] = []
    sender = Sender(
        [f"127.0.0.1:{grpc_port}", f"127.0.0.2:{grpc_port}"],
        "layout",
        "c1",
        timeout_s=120,
        on_result=lambda o: got.append(o) if o.result is not None else None,
        api_token=api_token(cluster),
    )
    count = 24
    run = asyncio.create_task(sender.run(pictures(tmp_path / "in", count)))
    for _ in range(1000):
        if len(got) >= 3 and agent.running:
            break
        await asyncio.sleep(0.02)
    assert agent.running and len(got) < count, "the master goes mid-run"
    await cluster.channel.close()
    await cluster.server.stop()
    cluster.server = None
    await asyncio.sleep(0.3)  # nobody leads for a moment
    moved = cluster.settings
    moved.master.bind = "127.0.0.2"
    second = MasterServer(moved)
    await second.start()
    try:
        report = await asyncio.wait_for(run, 120)
        assert report.done == count and not report.unfinished, [
            o.refused for o in report.outcomes if o.refused
        ]
        ids = {o.task_id for o in report.outcomes}
        assert len(ids) == count, "each picture has one task"
        for _ in range(500):
            if agent.connected.is_set() and agent.session.linked_to.startswith("127.0.0.2:"):
                break
            await asyncio.sleep(0.02)
        assert agent.session.linked_to == f"127.0.0.2:{grpc_port}"
        async with httpx.AsyncClient() as client:
            listed = (
                await client.get(
                    f"http://127.0.0.2:{http_port}/api/v1/tasks", params={"limit": 500}
                )
            ).json()
        assert {row["id"] for row in listed["tasks"]} == ids
    finally:
        await cluster.close()
        await second.stop()


async def test_the_operators_cli_asks_the_leader(make_cluster, standbys, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgesched.cli.ops import status

    cluster = await make_cluster()
    await cluster.add_agent("a1")
    gateway = await StandbyHttp("127.0.0.2", leader=leader_of(cluster)).start()
    nobody = await StandbyHttp("127.0.0.3").start()  # a standby that knows no leader yet
    standbys.extend([gateway, nobody])
    down = f"http://127.0.0.1:{free_port_on('127.0.0.1')}"

    def run(masters: str) -> Any:
        # in a thread: the CLI's calls are synchronous, the masters run on this event loop
        return CliRunner().invoke(status, ["--master", masters, "--json"])

    # the standby's hint leads to a leader that is not even listed; a dead one is skipped
    for masters in (f"http://127.0.0.2:{gateway.port}", f"{down},{cluster.http}"):
        result = await asyncio.to_thread(run, masters)
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.output)["device_list"]) == 1
    result = await asyncio.to_thread(run, f"http://127.0.0.3:{nobody.port},{down}")
    assert result.exit_code == 1
    assert "a standby master (leader: none yet)" in result.output
    assert "cannot reach" in result.output
    result = await asyncio.to_thread(run, f"{cluster.http},")
    assert result.exit_code == 2 and "empty URL" in result.output


async def test_client_send_takes_several_masters_on_one_port(
    make_cluster, standbys, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from edgesched.cli.client import client_send

    cluster = await make_cluster()
    await cluster.add_agent("a1")
    port = cluster.server.grpc_port
    standby = await StandbyGrpc("127.0.0.2", port, leader_of(cluster)).start()
    standbys.append(standby)
    pictures(tmp_path / "in", 5)
    args = [
        "-H", "127.0.0.2, 127.0.0.1", "--port", str(port), "-D", str(tmp_path / "in"),
        "--out", str(tmp_path / "out"), "--json", "--api-token", api_token(cluster),
    ]  # fmt: skip
    result = await asyncio.to_thread(CliRunner().invoke, client_send, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["sent"] == summary["done"] == 5
    assert standby.calls >= 1
    assert len(list((tmp_path / "out").glob("*.txt"))) == 5
    legacy = await asyncio.to_thread(CliRunner().invoke, client_send, [*args, "--legacy"])
    assert legacy.exit_code == 2 and "virtual IP" in legacy.output
    bad = await asyncio.to_thread(CliRunner().invoke, client_send, [*args[:1], "a,,b", *args[2:]])
    assert bad.exit_code == 2 and "empty entry" in bad.output
