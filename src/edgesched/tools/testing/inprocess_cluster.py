"""An in-process cluster for integration tests: a real master (gRPC + HTTP on port 0, SQLite in
a temp dir, or a PostgreSQL journal given by ``journal``) and real agents, all on one event
loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from edgesched.agent.agent import Agent
from edgesched.client.send import TaskStub, task_stub
from edgesched.config import Settings
from edgesched.master.server import MasterServer
from edgesched.wire import tasks


def master_settings(tmp: Path, journal: str = "", **scheduling: Any) -> Settings:
    """A master on port 0 in ``tmp``; ``journal``: a postgresql:// URL (default SQLite)."""
    settings = Settings()
    settings.master.journal = journal
    settings.master.bind = "127.0.0.1"
    settings.master.port = 0
    settings.master.http_port = 0
    settings.master.data_dir = str(tmp / "master")
    for key, value in scheduling.items():
        setattr(settings.scheduling, key, value)
    return settings


@dataclass
class InProcessCluster:
    """A real :class:`MasterServer` and real :class:`Agent` instances on the caller's event loop.

    Owns the server, the agents' run tasks and one gRPC channel, and stops them all in
    :meth:`close` (the ``cluster`` fixture calls it however a test ends). It touches the master
    only through its public servers and API tokens; tests reach inside through ``master``.
    """

    tmp: Path
    settings: Settings
    server: MasterServer | None = None
    agents: list[tuple[Agent, asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self.server = MasterServer(self.settings)
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")

    @property
    def master(self) -> Any:
        assert self.server is not None and self.server.master is not None
        return self.server.master

    @property
    def stub(self) -> TaskStub:
        assert self.channel is not None
        return task_stub(self.channel)

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying the API token (the client API needs it by default)."""
        return (("authorization", f"Bearer {self.master.api_token.current()}"),)

    @property
    def grpc_target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    def agent_settings(self, name: str, **agent: Any) -> Settings:
        assert self.server is not None
        settings = Settings()
        settings.tasktypes = dict(agent.pop("tasktypes", None) or settings.tasktypes)
        settings.agent.master_ip = "127.0.0.1"
        settings.agent.master_port = self.server.http_port
        settings.agent.token = self.master.token
        settings.agent.data_dir = str(self.tmp / name)
        settings.agent.backend = "sleep"
        settings.agent.drain_timeout_s = 1.0  # teardown hands running tasks back quickly
        for key, value in agent.items():
            setattr(settings.agent, key, value)
        return settings

    async def add_agent(self, name: str, **agent: Any) -> Agent:
        instance = Agent(self.agent_settings(name, **agent))
        stop = asyncio.Event()
        task = asyncio.create_task(instance.run(stop))
        self.agents.append((instance, stop, task))
        await asyncio.wait_for(instance.connected.wait(), 30)
        return instance

    async def stop_agent(self, instance: Agent) -> None:
        for entry in list(self.agents):
            if entry[0] is instance:
                entry[1].set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(entry[2], 10)
                self.agents.remove(entry)

    async def submit(
        self, key: str, payload: bytes, task_type: str = "layout", client_id: str = "test"
    ) -> tasks.SubmitReply:
        request = tasks.submit_request(
            client_id=client_id,
            idempotency_key=key,
            task_type=task_type,
            filename=f"{key}.png",
            payload=payload,
        )
        reply: tasks.SubmitReply = await self.stub.Submit(request, timeout=10, metadata=self.auth)
        return reply

    async def wait(self, task_ids: list[str], limit_s: float = 30) -> dict[str, tasks.TaskResult]:
        results: dict[str, tasks.TaskResult] = {}

        async def collect() -> None:
            request = tasks.watch_request(task_ids=task_ids)
            async for result in self.stub.WatchResults(request, metadata=self.auth):
                results[result.task_id] = result

        await asyncio.wait_for(collect(), limit_s)
        return results

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.get(self.http + path, timeout=5)
            return response

    async def post(self, path: str, token: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self.master.api_token.current()}"} if token else {}
        async with httpx.AsyncClient() as client:
            return await client.post(self.http + path, timeout=5, headers=headers)

    async def close(self) -> None:
        for _, stop, _ in self.agents:
            stop.set()
        for _, _, task in self.agents:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        self.agents.clear()
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop()
