"""The simulated fleet: light agents in worker processes, each with its own gRPC channel and one
``AgentLink.Connect`` stream, speaking the real protocol (register, heartbeats, rejoin with the
credential, goodbye).

The agent's own message building (``Agent._register``, ``Agent._heartbeat``) are methods of a
running agent, not functions this module could call, so the messages are built again here; the
second phase of issue 15 adds ``wire/``, where both will meet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from edgesched.agent.link import link_stub
from edgesched.boards import HARDWARE_SLOTS, ORIN, RK3588
from edgesched.tools.bench.scale.answers import Pending, answer
from edgesched.tools.bench.scale.decisions import fleet_types
from edgesched.tools.bench.scale.figures import BOARD, TASK_TYPES
from edgesched.wire import link as wire

# ---- the simulated agents (worker processes) -----------------------------------------------


@dataclass
class WorkerConfig:
    worker: int
    agents: int
    host: str
    http_port: int
    token: str
    seed: int
    join_concurrency: int = 32
    join_timeout_s: float = 60.0


@dataclass
class WorkerStats:
    """Counters of one worker; the window ones restart at ``mark``."""

    joined: int = 0
    join_failures: int = 0
    refusals: int = 0
    link_errors: int = 0
    rejoins_tried: int = 0
    rejoins_ok: int = 0
    register_bytes: int = 0  #: one Register message (serialised)
    reply_bytes: int = 0  #: one RegisterReply
    heartbeats: int = 0
    heartbeat_bytes: int = 0
    acks: int = 0
    ack_bytes: int = 0
    other_in: int = 0  #: anything else the master sent (none expected)
    tasks_answered: int = 0  #: assignments answered with a TaskDone (the phase with tasks)
    round_trips_ms: list[float] = field(default_factory=list)
    window_started: float = 0.0
    window_s: float = 0.0

    def mark(self) -> None:
        self.heartbeats = self.heartbeat_bytes = self.acks = self.ack_bytes = 0
        self.round_trips_ms = []
        self.window_started = time.monotonic()


class _Refused(Exception):
    pass


class SimAgent:
    """A light agent: one channel, one Connect stream, heartbeats, nothing else."""

    def __init__(
        self,
        index: int,
        worker: int,
        device_type: str,
        token: str,
        rng: random.Random,
        stats: WorkerStats,
        protocol: wire.ProtocolVersion,
    ) -> None:
        self.protocol = protocol  #: the real agent's
        self.index = index
        self.worker = worker
        self.device_type = device_type
        self.token = token
        self.rng = rng
        self.stats = stats
        self.slots = HARDWARE_SLOTS.get(device_type, 1)
        self.agent_id = ""
        self.credential = ""
        self.session = 0
        self.interval = 2.0
        self.joined = asyncio.Event()
        self.rejoined = asyncio.Event()
        self.stopping = False
        self.call: Any = None
        self.beater: asyncio.Task[None] | None = None
        self.seq = 0
        self.echo = 0
        self.sent: dict[int, float] = {}
        self.latency_ms = 0.0
        self.cpu = rng.uniform(0.05, 0.4)
        self.memory = rng.uniform(0.2, 0.6)
        self.xpu = rng.uniform(0.0, 0.3) if device_type != "cpu" else -1.0
        self.temperature = rng.uniform(38.0, 55.0)
        self.phase = rng.uniform(0.0, 1.0)
        # answering tasks (scale/answers.py): heartbeats and results share the stream, and a
        # grpc.aio stream takes one write at a time
        self.write_lock = asyncio.Lock()
        self.pending: Pending = {}

    @property
    def tasks_answered(self) -> int:
        return self.stats.tasks_answered

    @tasks_answered.setter
    def tasks_answered(self, value: int) -> None:
        self.stats.tasks_answered = value

    async def send(self, call: Any, message: wire.AgentMessage) -> None:
        async with self.write_lock:
            await call.write(message)

    def register(self) -> wire.AgentMessage:
        native, backend, probe = BOARD[self.device_type]
        if self.device_type == RK3588:
            cores = range(HARDWARE_SLOTS[RK3588])
            subs = [wire.SubDevice(name=f"npu{i}", kind="npu", slots=1) for i in cores]
        elif native == "onnx":
            subs = [wire.SubDevice(name="cpu", kind="cpu", slots=1)]
        else:
            kind = "gpu" if self.device_type == ORIN else "npu"
            subs = [wire.SubDevice(name=f"{kind}0", kind=kind, slots=1)]
        artefacts = [
            wire.Artefact(
                task_type=t,
                format=native,
                target=self.device_type,
                sha256="0" * 64,
                backend=backend,
            )
            for t in TASK_TYPES
        ]
        return wire.register(
            protocol=self.protocol,
            join_token=self.token,
            agent_id=self.agent_id,
            credential=self.credential,
            hostname=f"sim-{self.worker}-{self.index:04d}",
            device_type=self.device_type,
            task_types=list(TASK_TYPES),
            artefacts=artefacts,
            model_formats=[native, "onnx"] if native != "onnx" else ["onnx"],
            sub_devices=subs,
            slots=self.slots,
            backends=[backend],
            agent_version="bench-scale",
            static_info={"backend": backend, "probes": f"{probe},generic"},
            session=self.session,
        )

    def heartbeat(self) -> wire.AgentMessage:
        rng = self.rng
        self.cpu = min(1.0, max(0.0, self.cpu + rng.gauss(0.0, 0.03)))
        self.memory = min(1.0, max(0.0, self.memory + rng.gauss(0.0, 0.005)))
        if self.xpu >= 0:
            self.xpu = min(1.0, max(0.0, self.xpu + rng.gauss(0.0, 0.05)))
        self.temperature = min(90.0, max(30.0, self.temperature + rng.gauss(0.0, 0.3)))
        self.seq += 1
        self.sent[self.seq] = time.monotonic()
        for old in [s for s in self.sent if s < self.seq - 16]:
            del self.sent[old]
        has_xpu = self.xpu >= 0
        return wire.heartbeat(
            seq=self.seq,
            cpu=self.cpu,
            memory=self.memory,
            xpu=self.xpu,
            xpu_memory=0.25 + 0.5 * self.xpu if has_xpu else -1.0,
            temperature_c=self.temperature,
            power_w=3.0 + 5.0 * self.xpu if has_xpu else math.nan,
            bandwidth_mbps=0.0,  # measured on payloads only: none in this scenario
            latency_ms=self.latency_ms,
            probe=BOARD[self.device_type][2],
            free_slots=self.slots,
            agent_time_unix_ms=int(time.time() * 1000),
            echo_seq=self.echo,
        )

    async def run(self, channel: grpc.aio.Channel, gate: asyncio.Semaphore) -> None:
        """Keeps the link; when it breaks, rejoins with the credential after a capped, jittered
        backoff, like the real agent."""
        stub = link_stub(channel)
        delay = 0.2
        while not self.stopping:
            try:
                await self._link(stub, gate)
            except _Refused:
                self.stats.refusals += 1
                return
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError, OSError):
                self.stats.link_errors += 1
            if self.stopping:
                return
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(5.0, delay * 2)

    async def _link(self, stub: Any, gate: asyncio.Semaphore) -> None:
        self.session += 1
        call = stub.Connect()
        self.call = call
        try:
            register = self.register()
            self.stats.register_bytes = register.ByteSize()
            async with gate:  # bounds the registrations in progress, not the links
                await call.write(register)
                first = await asyncio.wait_for(call.read(), 15.0)
            if first is grpc.aio.EOF:
                raise ConnectionError("the master closed the link before registering")
            if wire.kind_of(first) == "refused":
                raise _Refused(f"{first.refused.code}: {first.refused.message}")
            reply = first.registered
            self.stats.reply_bytes = first.ByteSize()
            if self.agent_id:  # a rejoin: the master must know us by the credential
                if (reply.agent_id, reply.credential) == (self.agent_id, self.credential):
                    self.rejoined.set()
            else:
                self.agent_id, self.credential = reply.agent_id, reply.credential
            self.interval = max(0.05, reply.heartbeat_interval_ms / 1000.0)
            if not self.joined.is_set():
                self.joined.set()
                self.stats.joined += 1
            reader = asyncio.create_task(self._read(call))
            self.beater = asyncio.create_task(self._beat(call))
            try:
                # ends when the stream does; a cancelled call (relink) cancels the reader, which
                # must not cancel this agent: asyncio.wait does not raise
                await asyncio.wait({reader})
            finally:
                self.beater.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.beater
                reader.cancel()
            if not reader.cancelled() and (error := reader.exception()) is not None:
                raise error
        finally:
            self.call = None
            call.cancel()

    async def _beat(self, call: Any) -> None:
        await asyncio.sleep(self.interval * self.phase)  # boards join at unrelated times
        while True:
            message = self.heartbeat()
            await self.send(call, message)
            self.stats.heartbeats += 1
            self.stats.heartbeat_bytes += message.ByteSize()
            await asyncio.sleep(self.interval * self.rng.uniform(0.95, 1.0))

    async def _read(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if wire.kind_of(message) != "heartbeat_ack":
                if not await answer(self, call, message):  # a task: answered at once
                    self.stats.other_in += 1
                continue
            now = time.monotonic()
            seq = message.heartbeat_ack.seq
            self.stats.acks += 1
            self.stats.ack_bytes += message.ByteSize()
            self.echo = seq
            sent = self.sent.pop(seq, None)
            if sent is not None:
                rtt = (now - sent) * 1000
                self.stats.round_trips_ms.append(rtt)
                self.latency_ms = rtt if not self.latency_ms else 0.8 * self.latency_ms + 0.2 * rtt

    def relink(self) -> None:
        """Breaks the link as a network fault would: the agent rejoins with its credential."""
        if self.call is not None:
            self.call.cancel()

    async def leave(self) -> None:
        """Goodbye, then half-close: the master ends the stream and the agent stops."""
        self.stopping = True
        if self.beater is not None:
            self.beater.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.beater
        call = self.call
        if call is not None:
            goodbye = wire.goodbye("bench over")
            await call.write(goodbye)
            await call.done_writing()


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _worker(config: WorkerConfig) -> None:
    from edgesched.agent.link import PROTOCOL, discover_link_port

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "eof")  # the bench went away

    threading.Thread(target=read_commands, daemon=True).start()
    stats = WorkerStats()
    rng = random.Random(config.seed * 1000 + config.worker)
    started = time.monotonic()
    port = await asyncio.to_thread(discover_link_port, config.host, config.http_port, 10.0)
    target = f"{config.host}:{port}"
    options = [  # the real agent's
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    agents = [
        SimAgent(i, config.worker, t, config.token, random.Random(rng.random()), stats, PROTOCOL)
        for i, t in enumerate(fleet_types(config.agents, rng))
    ]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in agents]
    gate = asyncio.Semaphore(config.join_concurrency)
    tasks = [asyncio.create_task(a.run(c, gate)) for a, c in zip(agents, channels, strict=True)]
    joins = [asyncio.ensure_future(a.joined.wait()) for a in agents]
    _, pending = await asyncio.wait(joins, timeout=config.join_timeout_s)
    for waiter in pending:
        waiter.cancel()
    join_s = time.monotonic() - started
    stats.join_failures = config.agents - stats.joined
    joined = [a for a in agents if a.joined.is_set()]
    if joined:  # the credential: one agent loses its link and must rejoin as itself
        probe = joined[0]
        stats.rejoins_tried = 1
        probe.relink()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.rejoined.wait(), 15.0)
        stats.rejoins_ok = int(probe.rejoined.is_set())
    _emit(
        {
            "type": "joined",
            "worker": config.worker,
            "joined": stats.joined,
            "join_s": round(join_s, 3),
            "rejoins_ok": stats.rejoins_ok,
        }
    )
    while (command := await commands.get()) not in ("stop", "eof"):
        if command == "mark":
            stats.mark()
    if stats.window_started:
        stats.window_s = time.monotonic() - stats.window_started
    if command == "stop":
        _emit({"type": "stats", "worker": config.worker, **asdict(stats)})
    await asyncio.gather(*(a.leave() for a in agents), return_exceptions=True)
    _, still = await asyncio.wait(tasks, timeout=5.0)
    for task in still:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)


def worker_main(argv: Sequence[str]) -> None:
    """Entry of a worker process: ``python -m edgesched.tools.bench.scale --worker '<json>'``."""
    config = WorkerConfig(**json.loads(argv[0]))
    asyncio.run(_worker(config))
