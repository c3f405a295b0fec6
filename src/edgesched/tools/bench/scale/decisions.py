"""Placement decisions in the pure core, timed over a large fleet: the decision-latency half of
the scale benchmark (no processes, no network)."""

from __future__ import annotations

import gc
import itertools
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgesched.boards import CPU, HARDWARE_SLOTS, MEDIAN_MS
from edgesched.stats import percentile
from edgesched.tools.bench.scale.figures import (
    BOARD,
    FLEET_MIX,
    STRATEGY_NAMES,
    TASK_TYPES,
    rounded,
)

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


def fleet_types(count: int, rng: random.Random) -> list[str]:
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
    for i, device_type in enumerate(fleet_types(devices, rng)):
        native = BOARD[device_type][0]
        device = Device(
            id=f"{device_type}-{i:04d}{rng.getrandbits(16):04x}",
            device_type=device_type,
            slots=HARDWARE_SLOTS.get(device_type, 1),
            task_types=frozenset(TASK_TYPES),
            formats={t: native for t in TASK_TYPES},
            hostname=f"board-{i}",
            info={"backend": BOARD[device_type][1]},
        )
        core.register(device, [], [], now)
        core.heartbeat(device.id, _core_metrics(device_type, rng), now)
    service_ms = {**MEDIAN_MS, CPU: 300.0}
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
            return round(percentile(values, q, "nearest_rank") / 1000, 4) if values else math.nan

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
        "machine_load_avg_1m": rounded(os.getloadavg()[0], 2),
    }
