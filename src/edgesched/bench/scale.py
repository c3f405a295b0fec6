"""``edgesched bench scale``: a thousand light agents heartbeating against one real master.

One master runs as its own process (:class:`~edgesched.demo.cluster.LocalCluster`). A few worker
processes each simulate a share of the agents; every simulated agent holds its own gRPC channel
and one ``AgentLink.Connect`` stream and speaks the real protocol: it asks the gateway for the
link port, registers with the join token, keeps the credential it is given (one agent per worker
drops its link and rejoins with that credential, as a real agent does after a broken link), then
sends a Heartbeat with plausible, jittered board metrics every interval the master announced.

Measured over a steady window after every agent joined:

- the master's CPU (user + system of its process, percent of one core) and RSS;
- heartbeat handling on the master (``edgesched_heartbeat_handling_seconds`` from /metrics);
- heartbeat bytes per agent per second, from the serialised protobuf messages each way and, where
  ``ss`` can tell, from the master's TCP sockets (HTTP/2 + gRPC framing and keepalive included);
- separately, in this process, a scheduling decision's latency in the pure core with 1,000
  registered devices, for each strategy.

The agent workers share the machine with the master: only the master's process is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import grpc

from edgesched.v1 import agent_pb2, agent_pb2_grpc

#: the gates this scenario checks
CPU_TARGET_PERCENT = 25.0  #: of one core, 1,000 agents at the default 2 s heartbeat
DECISION_TARGET_MS = 1.0  #: p99 of one placement decision with 1,000 devices
STRATEGY_NAMES = ("roundrobin", "load", "ect")
#: board mix of the simulated fleet: (device type, share)
FLEET_MIX = (("rk3588", 0.4), ("atlas310", 0.25), ("orin", 0.15), ("cpu", 0.2))
#: what a real agent on such a board reports: (native format, backend, probe)
BOARD = {
    "rk3588": ("rknn", "rknn", "rknpu"),
    "atlas310": ("om", "ais_bench", "ascend"),
    "orin": ("engine", "tensorrt", "jetson"),
    "cpu": ("onnx", "onnx", "generic"),
}
TASK_TYPES = ("layout", "echo")
#: gRPC's 5-byte message prefix + the 9-byte HTTP/2 DATA frame header, per message
FRAMING_BYTES = 14


# ---- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram_quantile(buckets: dict[float, float], q: float) -> tuple[float, float]:
    """(estimate, bucket upper bound) of quantile ``q`` in [0, 1] of cumulative ``buckets``
    (upper bound → count), interpolating linearly inside the bucket like Prometheus does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan, math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower, upper
            inside = count - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (upper - lower) * share, upper
        lower, below = upper, count
    return lower, math.inf


def _round(value: float, digits: int = 3) -> float | None:
    return None if not math.isfinite(value) else round(value, digits)


# ---- scheduling decisions in the pure core -------------------------------------------------


def _clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) seconds: a decision is pure CPU work, so its CPU time is its
    cost even when a busy machine takes the core away meanwhile (that shows in wall time)."""
    return time.perf_counter(), time.thread_time()


class _TimedStrategy:
    """Wraps a strategy and notes when each ``choose`` returns: the time between two returns is
    one decision of ``Core.dispatch`` (take the task, filter the candidates, choose, book it),
    and the first one also carries the dispatch's setup. The core is not changed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.marks: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # considers_busy, weighs_queues, bind, ...

    def choose(self, task: Any, candidates: Sequence[Any]) -> Any:
        device = self.inner.choose(task, candidates)
        self.marks.append(_clocks())
        return device


def _fleet_types(count: int, rng: random.Random) -> list[str]:
    types: list[str] = []
    for device_type, share in FLEET_MIX:
        types += [device_type] * round(count * share)
    types = (types + ["cpu"] * count)[:count]
    rng.shuffle(types)
    return types


def _core_metrics(device_type: str, rng: random.Random) -> Any:
    from edgesched.core.state import Metrics

    has_xpu = device_type != "cpu"
    return Metrics(
        cpu=rng.uniform(0.05, 0.6),
        memory=rng.uniform(0.2, 0.7),
        xpu=rng.uniform(0.0, 0.9) if has_xpu else -1.0,
        xpu_memory=rng.uniform(0.1, 0.6) if has_xpu else -1.0,
        temperature_c=rng.uniform(38.0, 68.0),
        power_w=rng.uniform(3.0, 25.0),
        bandwidth_mbps=rng.choice([0.0, rng.uniform(10.0, 900.0)]),
        latency_ms=rng.uniform(0.5, 40.0),
        probe=BOARD[device_type][2],
    )


def decision_latency(
    strategy: str,
    devices: int = 1000,
    samples: int = 1500,
    burst: int = 300,
    arrival_rate: float = 200.0,
    seed: int = 1,
) -> dict[str, Any]:
    """Times placement decisions of the pure core with ``devices`` registered devices.

    Simulated time: an assigned task finishes after its board's service time, every device
    heartbeats every 2 s with new metrics. burst: ``burst`` tasks queued at once (then dispatched
    again as slots free) until they are done, until ``samples`` tasks went. arrival: ``samples``
    Poisson arrivals at ``arrival_rate`` per second, one dispatch each. Every ``choose`` is one
    decision, timed from the previous one (see :class:`_TimedStrategy`); whole dispatch calls
    are timed too.
    """
    import heapq

    from edgesched.config import SchedulingSettings
    from edgesched.core.commands import Assign
    from edgesched.core.core import Core
    from edgesched.core.state import Device, Task
    from edgesched.core.strategies import make_strategy

    rng = random.Random(seed)
    settings = SchedulingSettings(strategy=strategy)
    timed = _TimedStrategy(make_strategy(strategy, settings, rng))
    core = Core(settings, timed, rng)
    now = 1000.0
    for i, device_type in enumerate(_fleet_types(devices, rng)):
        native = BOARD[device_type][0]
        device = Device(
            id=f"{device_type}-{i:04d}{rng.getrandbits(16):04x}",
            device_type=device_type,
            slots=3 if device_type == "rk3588" else 1,
            task_types=frozenset(TASK_TYPES),
            formats={t: native for t in TASK_TYPES},
            hostname=f"board-{i}",
            info={"backend": BOARD[device_type][1]},
        )
        core.register(device, [], [], now)
        core.heartbeat(device.id, _core_metrics(device_type, rng), now)
    service_ms = {"rk3588": 40.0, "atlas310": 25.0, "orin": 5.0, "cpu": 300.0}
    finishing: list[tuple[float, int, Assign]] = []
    next_beat = now + 2.0
    counter = 0

    def submit() -> None:
        nonlocal counter
        counter += 1
        task = Task(
            id=f"t{counter:08d}",
            task_type="layout" if rng.random() < 0.9 else "echo",
            size_bytes=rng.randint(100_000, 300_000),
            submitted_at=now,
            client_id="bench",
        )
        core.submit(task, now)

    def dispatch(samples: _Samples) -> None:
        timed.marks.clear()
        started = _clocks()
        commands = core.dispatch(now)
        ended = _clocks()
        samples.call_wall.append((ended[0] - started[0]) * 1e6)
        samples.call_cpu.append((ended[1] - started[1]) * 1e6)
        for a, b in itertools.pairwise([started, *timed.marks]):
            samples.wall.append((b[0] - a[0]) * 1e6)
            samples.cpu.append((b[1] - a[1]) * 1e6)
        for command in commands:
            if isinstance(command, Assign):
                device_type = core.devices[command.device_id].device_type
                took = service_ms[device_type] * rng.uniform(0.8, 1.3)
                heapq.heappush(finishing, (now + took / 1000, len(finishing) + counter, command))

    def advance(to: float) -> None:
        nonlocal now, next_beat
        while finishing and finishing[0][0] <= to:
            now, _, assign = heapq.heappop(finishing)
            took = service_ms[core.devices[assign.device_id].device_type]
            core.done(assign.task.id, assign.attempt, assign.device_id, took, now)
        now = to
        if now >= next_beat:
            next_beat = now + 2.0
            for device in core.devices.values():
                core.heartbeat(device.id, _core_metrics(device.device_type, rng), now)

    gc.collect()
    bursty = _Samples()
    for _ in range(max(1, math.ceil(samples / burst))):
        for _ in range(burst):
            submit()
        dispatch(bursty)
        while core.tasks:
            advance(now + 0.01)
            dispatch(bursty)
        advance(now + 1.0)
    gc.collect()
    arriving = _Samples()
    for _ in range(samples):
        advance(now + rng.expovariate(arrival_rate))
        submit()
        dispatch(arriving)
    burst_figures, arrival_figures = bursty.summary(), arriving.summary()
    return {
        "burst": burst_figures,
        "arrival": arrival_figures,
        "p99_ms": max(burst_figures["p99_ms"], arrival_figures["p99_ms"]),
        "wall_p99_ms": max(burst_figures["wall_p99_ms"], arrival_figures["wall_p99_ms"]),
    }


@dataclass
class _Samples:
    """Microseconds per decision and per dispatch call, in CPU and in wall-clock time."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    call_cpu: list[float] = field(default_factory=list)
    call_wall: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float], q: float) -> float:
            return round(percentile(values, q) / 1000, 4) if values else math.nan

        return {
            "decisions": len(self.cpu),
            "p50_ms": ms(self.cpu, 50),
            "p99_ms": ms(self.cpu, 99),
            "max_ms": ms(self.cpu, 100),
            "wall_p50_ms": ms(self.wall, 50),
            "wall_p99_ms": ms(self.wall, 99),
            "dispatch_calls": len(self.call_cpu),
            "dispatch_call_p99_ms": ms(self.call_cpu, 99),
            "dispatch_call_max_ms": ms(self.call_cpu, 100),
        }


def decision_benchmark(devices: int = 1000, samples: int = 1500, seed: int = 1) -> dict[str, Any]:
    strategies = {
        name: decision_latency(name, devices, samples, seed=seed) for name in STRATEGY_NAMES
    }
    return {
        "devices": devices,
        "strategies": strategies,
        "p99_ms": max(s["p99_ms"] for s in strategies.values()),
        "wall_p99_ms": max(s["wall_p99_ms"] for s in strategies.values()),
        "machine_load_avg_1m": _round(os.getloadavg()[0], 2),
    }


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
    other_in: int = 0  #: anything else the master sent (none expected: no tasks)
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
        protocol: agent_pb2.ProtocolVersion,
    ) -> None:
        self.protocol = protocol  #: the real agent's
        self.index = index
        self.worker = worker
        self.device_type = device_type
        self.token = token
        self.rng = rng
        self.stats = stats
        self.slots = 3 if device_type == "rk3588" else 1
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

    def register(self) -> agent_pb2.AgentMessage:
        native, backend, probe = BOARD[self.device_type]
        if self.device_type == "rk3588":
            subs = [agent_pb2.SubDevice(name=f"npu{i}", kind="npu", slots=1) for i in range(3)]
        elif native == "onnx":
            subs = [agent_pb2.SubDevice(name="cpu", kind="cpu", slots=1)]
        else:
            kind = "gpu" if self.device_type == "orin" else "npu"
            subs = [agent_pb2.SubDevice(name=f"{kind}0", kind=kind, slots=1)]
        artefacts = [
            agent_pb2.ModelArtefact(
                task_type=t,
                format=native,
                target=self.device_type,
                sha256="0" * 64,
                backend=backend,
            )
            for t in TASK_TYPES
        ]
        caps = agent_pb2.Capabilities(
            task_types=list(TASK_TYPES),
            model_formats=[native, "onnx"] if native != "onnx" else ["onnx"],
            sub_devices=subs,
            slots=self.slots,
            artefacts=artefacts,
            backends=[backend],
        )
        return agent_pb2.AgentMessage(
            register=agent_pb2.Register(
                protocol=self.protocol,
                join_token=self.token,
                agent_id=self.agent_id,
                credential=self.credential,
                hostname=f"sim-{self.worker}-{self.index:04d}",
                device_type=self.device_type,
                capabilities=caps,
                agent_version="bench-scale",
                static_info={"backend": backend, "probes": f"{probe},generic"},
                session=self.session,
            )
        )

    def heartbeat(self) -> agent_pb2.AgentMessage:
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
        return agent_pb2.AgentMessage(
            heartbeat=agent_pb2.Heartbeat(
                seq=self.seq,
                metrics=agent_pb2.DeviceMetrics(
                    cpu=self.cpu,
                    memory=self.memory,
                    xpu=self.xpu,
                    xpu_memory=0.25 + 0.5 * self.xpu if has_xpu else -1.0,
                    temperature_c=self.temperature,
                    power_w=3.0 + 5.0 * self.xpu if has_xpu else math.nan,
                    bandwidth_mbps=0.0,  # measured on payloads only: none in this scenario
                    latency_ms=self.latency_ms,
                    probe=BOARD[self.device_type][2],
                ),
                free_slots=self.slots,
                agent_time_unix_ms=int(time.time() * 1000),
                echo_seq=self.echo,
            )
        )

    async def run(self, channel: grpc.aio.Channel, gate: asyncio.Semaphore) -> None:
        """Keeps the link; when it breaks, rejoins with the credential after a capped, jittered
        backoff, like the real agent."""
        stub = agent_pb2_grpc.AgentLinkStub(channel)
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

    async def _link(self, stub: agent_pb2_grpc.AgentLinkStub, gate: asyncio.Semaphore) -> None:
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
            if first.WhichOneof("kind") == "refused":
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
            await call.write(message)
            self.stats.heartbeats += 1
            self.stats.heartbeat_bytes += message.ByteSize()
            await asyncio.sleep(self.interval * self.rng.uniform(0.95, 1.0))

    async def _read(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("kind") != "heartbeat_ack":
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
            goodbye = agent_pb2.AgentMessage(goodbye=agent_pb2.Goodbye(reason="bench over"))
            await call.write(goodbye)
            await call.done_writing()


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _worker(config: WorkerConfig) -> None:
    from edgesched.agent.agent import PROTOCOL, discover_link_port

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
        for i, t in enumerate(_fleet_types(config.agents, rng))
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
    """Entry of a worker process: ``python -m edgesched.bench.scale --worker '<json>'``."""
    config = WorkerConfig(**json.loads(argv[0]))
    asyncio.run(_worker(config))


# ---- the bench (parent process) ------------------------------------------------------------


class _Worker:
    """A worker process; its JSON lines arrive on a queue."""

    def __init__(self, config: WorkerConfig, log_path: Path) -> None:
        self.config = config
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgesched.bench.scale",
                    "--worker",
                    json.dumps(asdict(config)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C reaches the bench, which stops it in order
            )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()

    def expect(self, kind: str, deadline: float) -> dict[str, Any]:
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"worker {self.config.worker}: no {kind!r} in time") from None
            if event is None:
                code = self.proc.wait()
                raise RuntimeError(f"worker {self.config.worker} exited ({code}); see its log")
            if event.get("type") == kind:
                return event

    def stop(self) -> None:
        """Closing its stdin tells the worker to leave (goodbyes); then SIGTERM, then SIGKILL."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


@dataclass
class _Sample:
    at: float
    cpu_s: float
    threads: dict[str, float]
    sockets: tuple[int, int] | None  #: (bytes the master received, bytes it sent) on the link


def _thread_times(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (gRPC's threads, the event loop, executors)."""
    import psutil

    out: dict[str, float] = {}
    for thread in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        out[name] = out.get(name, 0.0) + thread.user_time + thread.system_time
    return out


_SS_BYTES = re.compile(r"\bbytes_(sent|acked|received):(\d+)")


def _socket_bytes(port: int) -> tuple[int, int] | None:
    """(received, sent) bytes summed over the master's established sockets on ``port``."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    try:
        out = subprocess.run(
            [ss, "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    received = sent = acked = 0
    found = False
    for kind, value in _SS_BYTES.findall(out):
        found = True
        if kind == "received":
            received += int(value)
        elif kind == "sent":
            sent += int(value)
        else:
            acked += int(value)
    return (received, sent or acked) if found else None


def _scrape(http_url: str) -> dict[float, float]:
    """The heartbeat-handling histogram's cumulative buckets (upper bound → count)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{http_url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "edgesched_heartbeat_handling_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def _online_devices(http_url: str, api_token: str) -> int:
    import httpx

    response = httpx.get(
        f"{http_url}/api/v1/devices",
        headers={"authorization": f"Bearer {api_token}"},
        timeout=30,
    )
    response.raise_for_status()
    return sum(1 for d in response.json()["devices"] if d["state"] == "online")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """A SIGTERM stops the bench like a Ctrl-C: everything it started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_scale(
    agents: int = 1000,
    processes: int = 4,
    seconds: float = 30.0,
    settle_s: float | None = None,
    seed: int = 1,
    decision_devices: int = 1000,
    decision_samples: int = 1500,
    workdir: Path | None = None,
    py_spy: Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Runs the scenario and returns its figures (see the module's docstring)."""
    import psutil

    from edgesched.demo.cluster import LocalCluster

    say = progress or (lambda _msg: None)
    started = time.monotonic()
    processes = max(1, min(processes, agents))
    say(f"scheduling decisions with {decision_devices} devices (in process)")
    decisions = decision_benchmark(decision_devices, decision_samples, seed)
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="edgesched-scale-")) if workdir is None else workdir
    cluster = LocalCluster(root=root / "cluster", log_level="warning")
    workers: list[_Worker] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        with _sigterm_interrupts():
            say(f"starting the master, then {agents} agents in {processes} processes")
            cluster.start_master()
            master = psutil.Process(cluster.procs["master"].pid)
            join_timeout = 30.0 + agents / 20
            share, extra = divmod(agents, processes)
            for index in range(processes):
                config = WorkerConfig(
                    worker=index,
                    agents=share + (1 if index < extra else 0),
                    host="127.0.0.1",
                    http_port=cluster.http_port,
                    token=cluster.token,
                    seed=seed,
                    join_timeout_s=join_timeout,
                )
                workers.append(_Worker(config, root / "cluster" / "logs" / f"worker-{index}.log"))
            deadline = time.monotonic() + join_timeout + 30
            joins = [w.expect("joined", deadline) for w in workers]
            joined = sum(j["joined"] for j in joins)
            join_s = max(j["join_s"] for j in joins)
            interval = 2.0  # the master's default; the agents take what it announces
            settle = settle_s if settle_s is not None else 2 * interval
            say(f"{joined} agents joined in {join_s:.1f} s; settling {settle:g} s")
            time.sleep(settle)
            online = _online_devices(cluster.http_url, cluster.api_token)
            buckets_before = _scrape(cluster.http_url)
            for w in workers:
                w.send("mark")
            worker_procs = [psutil.Process(w.proc.pid) for w in workers]
            psutil.cpu_percent()  # starts the machine-wide figure
            workers_before = sum(sum(p.cpu_times()[:2]) for p in worker_procs)
            if py_spy is not None:
                spy = _start_py_spy(master.pid, py_spy, seconds, root)
            say(f"measuring the master for {seconds:g} s")
            samples = [_sample(master, cluster.grpc_port)]
            rss_max = master.memory_info().rss
            window_end = samples[0].at + seconds
            while time.monotonic() < window_end:
                time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
                samples.append(_sample(master, cluster.grpc_port, full=False))
                rss_max = max(rss_max, master.memory_info().rss)
            last = _sample(master, cluster.grpc_port)
            samples[-1] = last
            machine_cpu = psutil.cpu_percent()
            load_avg = os.getloadavg()[0]
            workers_cpu_s = sum(sum(p.cpu_times()[:2]) for p in worker_procs) - workers_before
            rss = master.memory_info().rss
            buckets_after = _scrape(cluster.http_url)
            for w in workers:
                w.send("stop")
            stats = [w.expect("stats", time.monotonic() + 30) for w in workers]
            if spy is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(timeout=30)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        for worker in workers:
            worker.stop()
        cluster.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)

    first = samples[0]
    window = last.at - first.at
    cpu_percent = (last.cpu_s - first.cpu_s) / window * 100
    per_second = [(b.cpu_s - a.cpu_s) / (b.at - a.at) * 100 for a, b in itertools.pairwise(samples)]
    by_thread = {
        name: round((seconds_ - first.threads.get(name, 0.0)) / window * 100, 2)
        for name, seconds_ in last.threads.items()
    }
    by_thread = dict(sorted(by_thread.items(), key=lambda kv: -kv[1]))
    handled = {le: buckets_after.get(le, 0.0) - count for le, count in buckets_before.items()}
    hb_p50, _ = histogram_quantile(handled, 0.50)
    hb_p99, hb_p99_le = histogram_quantile(handled, 0.99)
    handled_count = max(handled.values()) if handled else 0.0
    heartbeats = sum(s["heartbeats"] for s in stats)
    acks = sum(s["acks"] for s in stats)
    agent_window = sum(s["window_s"] for s in stats) / len(stats)
    up_proto = sum(s["heartbeat_bytes"] for s in stats)
    down_proto = sum(s["ack_bytes"] for s in stats)
    per_agent_s = max(1, joined) * agent_window
    round_trips = [rtt for s in stats for rtt in s["round_trips_ms"]]
    wire: dict[str, Any] | None = None
    if first.sockets is not None and last.sockets is not None:
        received = last.sockets[0] - first.sockets[0]
        sent = last.sockets[1] - first.sockets[1]
        wire = {
            "up": round(received / window / max(1, joined), 1),
            "down": round(sent / window / max(1, joined), 1),
            "total": round((received + sent) / window / max(1, joined), 1),
        }
    hb_size = up_proto / heartbeats if heartbeats else math.nan
    ack_size = down_proto / acks if acks else math.nan
    proto_total = (up_proto + down_proto) / per_agent_s
    framed_total = (up_proto + down_proto + (heartbeats + acks) * FRAMING_BYTES) / per_agent_s
    rejoins_tried = sum(s["rejoins_tried"] for s in stats)
    rejoins_ok = sum(s["rejoins_ok"] for s in stats)
    gates = {
        "all_agents_joined": joined == agents and online >= agents,
        "credential_rejoin": rejoins_ok == rejoins_tried,
        "master_cpu": cpu_percent <= CPU_TARGET_PERCENT,
        "decision_p99": decisions["p99_ms"] <= DECISION_TARGET_MS,
    }
    return {
        "scenario": "scale",
        "agents": agents,
        "processes": processes,
        "heartbeat_interval_s": interval,
        "window_s": round(window, 2),
        "agents_joined": joined,
        "devices_online": online,
        "join_s": join_s,
        "master_cpu_percent": _round(cpu_percent, 2),
        "master_rss_mib": _round(rss / 2**20, 1),
        "heartbeat_handling_p99_ms": _round(hb_p99 * 1000, 4),
        "decision_p99_ms": decisions["p99_ms"],
        "heartbeat_bytes_per_s_per_agent": _round(framed_total, 1),
        "targets": {
            "master_cpu_percent_max": CPU_TARGET_PERCENT,
            "decision_p99_ms_max": DECISION_TARGET_MS,
        },
        "gates": gates,
        "ok": all(gates.values()),
        "master": {
            "pid": master.pid,
            "cpu_percent": _round(cpu_percent, 2),
            "cpu_percent_max_1s": _round(max(per_second), 2) if per_second else None,
            "cpu_percent_by_thread": by_thread,
            "rss_mib": _round(rss / 2**20, 1),
            "rss_max_mib": _round(rss_max / 2**20, 1),
        },
        "heartbeats": {
            "sent_per_s": _round(heartbeats / agent_window, 1) if agent_window else None,
            "expected_per_s": _round(joined / (interval * 0.975), 1),  # jitter: 0.95-1.0
            "handled_in_window": int(handled_count),
            "handling_p50_ms": _round(hb_p50 * 1000, 4),
            "handling_p99_ms": _round(hb_p99 * 1000, 4),
            "handling_p99_bucket_le_ms": _round(hb_p99_le * 1000, 4),
            "acks_per_s": _round(acks / agent_window, 1) if agent_window else None,
            "round_trip_p50_ms": _round(percentile(round_trips, 50), 3),
            "round_trip_p99_ms": _round(percentile(round_trips, 99), 3),
            "link_errors": sum(s["link_errors"] for s in stats),
            "refusals": sum(s["refusals"] for s in stats),
            "unexpected_messages": sum(s["other_in"] for s in stats),
        },
        "credential_rejoins": {"tried": rejoins_tried, "ok": rejoins_ok},
        "bytes": {
            "heartbeat_message": _round(hb_size, 1),
            "ack_message": _round(ack_size, 1),
            "register_message": stats[0]["register_bytes"],
            "register_reply": stats[0]["reply_bytes"],
            "proto_per_s_per_agent": _round(proto_total, 1),
            "framed_per_s_per_agent": _round(framed_total, 1),
            "wire_per_s_per_agent": wire,
        },
        "decisions": decisions,
        "load_generator": {
            "workers_cpu_percent": _round(workers_cpu_s / window * 100, 1),
            "machine_cpu_percent": _round(machine_cpu, 1),  #: of all cores, whoever used them
            "machine_load_avg_1m": _round(load_avg, 2),
            "worker_pids": [w.proc.pid for w in workers],
            "cores": os.cpu_count(),
        },
        "notes": [
            "master CPU is the master process alone (user+system, % of one core); the agent "
            "workers run on the same machine and compete with it for the cores",
            "heartbeat handling is the master's handler (metrics, ack queued, dispatch), not "
            "gRPC's transport; round trips are as the agents saw them (their own CPU included)",
            "framed bytes add gRPC's 5-byte prefix and HTTP/2's 9-byte frame header per "
            "message; wire bytes are the master's TCP sockets (pings and flow control too)",
            "decision p99 is the worst of every strategy, burst and arrival, in the pure core, "
            "in CPU time of the deciding thread (wall-clock p99 beside it: on a busy machine it "
            "also holds the time the core was taken away)",
        ],
        "runtime_s": round(time.monotonic() - started, 1),
    }


def _sample(master: Any, port: int, full: bool = True) -> _Sample:
    times = master.cpu_times()
    return _Sample(
        at=time.monotonic(),
        cpu_s=times.user + times.system,
        threads=_thread_times(master.pid) if full else {},
        sockets=_socket_bytes(port) if full else None,
    )


def _start_py_spy(pid: int, out: Path, seconds: float, root: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    with open(root / "py-spy.log", "ab") as log_file:
        return subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(out),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _table(r: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    g, b, h = r["gates"], r["bytes"], r["heartbeats"]
    wire = b["wire_per_s_per_agent"] or {}
    lines = [
        f"scale: {r['agents_joined']}/{r['agents']} agents joined ({r['devices_online']} online "
        f"on the master) in {r['join_s']:.1f} s, {r['processes']} agent processes, heartbeat "
        f"{r['heartbeat_interval_s']:g} s, window {r['window_s']:g} s",
        f"{'master CPU':<28}{r['master_cpu_percent']:>10} %   target ≤ "
        f"{CPU_TARGET_PERCENT:g} % of one core: {mark(g['master_cpu'])}",
        f"{'master RSS':<28}{r['master_rss_mib']:>10} MiB",
        f"{'heartbeat handling p99':<28}{r['heartbeat_handling_p99_ms']:>10} ms  "
        f"(p50 {h['handling_p50_ms']} ms; agent round trip p99 {h['round_trip_p99_ms']} ms)",
        f"{'decision p99 (worst)':<28}{r['decision_p99_ms']:>10} ms  target ≤ "
        f"{DECISION_TARGET_MS:g} ms: {mark(g['decision_p99'])}",
        f"{'heartbeat bytes/s per agent':<28}{r['heartbeat_bytes_per_s_per_agent']:>10} B/s "
        f"(protobuf {b['proto_per_s_per_agent']}; wire {wire.get('total', 'n/a')})",
    ]
    for name, s in r["decisions"]["strategies"].items():
        lines.append(
            f"  {name:<12} burst p99 {s['burst']['p99_ms']} ms, arrival p99 "
            f"{s['arrival']['p99_ms']} ms"
        )
    lines.append(
        f"agents: {'all joined' if g['all_agents_joined'] else 'NOT ALL JOINED'}, credential "
        f"rejoins {r['credential_rejoins']['ok']}/{r['credential_rejoins']['tried']}; load "
        f"generator {r['load_generator']['workers_cpu_percent']} % CPU; ran in {r['runtime_s']} s"
    )
    return "\n".join(lines)


@click.command("scale")
@click.option("--agents", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--processes",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="worker processes simulating the agents",
)
@click.option(
    "--seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="steady-state window measured after every agent joined",
)
@click.option(
    "--decision-devices",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="devices registered in the core for the decision latency",
)
@click.option(
    "--decision-samples",
    default=1500,
    show_default=True,
    type=click.IntRange(min=10),
    help="decisions timed per strategy, in bursts and again as single arrivals",
)
@click.option(
    "--settle",
    "settle_s",
    default=4.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="wait after the last join before measuring (heartbeat phases spread)",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="keep the master's data and the logs here (default: a temporary directory)",
)
@click.option(
    "--py-spy",
    "py_spy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="profile the master over the window with py-spy (.svg, .json or raw stacks)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def scale_command(
    agents: int,
    processes: int,
    seconds: float,
    decision_devices: int,
    decision_samples: int,
    settle_s: float,
    seed: int,
    workdir: Path | None,
    py_spy: Path | None,
    as_json: bool,
) -> None:
    """1,000 light agents heartbeating against one real master: its CPU, memory, heartbeat
    handling and bytes; scheduling decisions with 1,000 devices in the pure core."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    result = run_scale(
        agents,
        processes,
        seconds,
        settle_s=settle_s,
        seed=seed,
        decision_devices=decision_devices,
        decision_samples=decision_samples,
        workdir=workdir,
        py_spy=py_spy,
        progress=progress,
    )
    click.echo(json.dumps(result) if as_json else _table(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
    else:
        scale_command()
