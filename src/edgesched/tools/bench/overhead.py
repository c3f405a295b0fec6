"""``overhead`` and ``payload``: what the master costs per task, measured end to end.

overhead: 2 agents with the ``noop`` backend, tasks of 1 KB through client → master → agent →
master → client with the journal on: tasks/s over a bulk run, and p50/p99 of sequential round
trips, at the default durability and again with ``--durability full``, the disk's fsync beside.

payload: 2 agents with the ``busy`` backend (one slot each, about 5 ms of CPU per task), tasks
of 100 KB: tasks/s and efficiency = tasks/s ÷ (2 × 1000 ÷ measured work ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from typing import Any

import click

from edgesched.tools.bench.makespan import machine
from edgesched.tools.bench.timing import Client, fsync_ms
from edgesched.tools.testing.lifecycle import running_cluster
from edgesched.tools.testing.process_cluster import LocalCluster

TARGET_TASKS_PER_S = 5000
TARGET_P50_MS = 1.0
TARGET_EFFICIENCY = 0.85


def run_overhead(
    tasks: int = 2000,
    sequential: int = 300,
    size: int = 1024,
    durabilities: tuple[str, ...] = ("normal", "full"),
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    started = time.perf_counter()
    payload = os.urandom(size)
    runs: dict[str, Any] = {}
    fsync: dict[str, float] = {}

    async def measure(c: LocalCluster) -> dict[str, Any]:
        async with Client(c).session() as client:
            await client.round_trips(payload, 20, timeout_s)  # warm up every path
            bulk = await client.bulk([payload] * tasks, timeout_s)
            bulk.pop("results")
            trips = await client.round_trips(payload, sequential, timeout_s)
        return {"bulk": bulk, "round_trip_ms": trips}

    async def main() -> None:  # one event loop for every run: gRPC's poller stays with it
        for durability in durabilities:
            agents = [["--backend", "noop", "--slots", "8"]] * 2
            with running_cluster(agents, ["--durability", durability]) as c:
                if not fsync:
                    fsync.update(fsync_ms(c.master_dir))
                runs[durability] = await measure(c)

    asyncio.run(main())
    normal = runs.get("normal")
    return {
        "scenario": "overhead",
        "tasks": tasks,
        "sequential": sequential,
        "payload_bytes": size,
        "agents": "2 × noop backend, 8 slots",
        "durability": runs,
        "fsync_ms": fsync,
        "targets": {
            "tasks_per_s": TARGET_TASKS_PER_S,
            "round_trip_p50_ms": TARGET_P50_MS,
            "met": None
            if normal is None
            else {
                "tasks_per_s": normal["bulk"]["tasks_per_s"] >= TARGET_TASKS_PER_S,
                "round_trip_p50_ms": normal["round_trip_ms"]["p50"] <= TARGET_P50_MS,
            },
        },
        "runtime_s": round(time.perf_counter() - started, 2),
        "machine": machine(),
    }


def run_payload(
    tasks: int = 500, size: int = 100_000, busy_ms: float = 5.0, timeout_s: float = 300.0
) -> dict[str, Any]:
    started = time.perf_counter()
    payloads = [os.urandom(size) for _ in range(min(tasks, 16))]
    agents = [["--backend", "busy", "--busy-ms", str(busy_ms), "--slots", "1"]] * 2

    async def measure() -> dict[str, Any]:
        with running_cluster(agents) as c:
            async with Client(c).session() as client:
                await client.round_trips(payloads[0], 10, timeout_s)  # warm up
                return await client.bulk(
                    [payloads[i % len(payloads)] for i in range(tasks)], timeout_s
                )

    bulk = asyncio.run(measure())
    results = bulk.pop("results")
    work = [r.timings.board.inference_ms for r in results if r.timings.board.inference_ms > 0]
    work_ms = statistics.median(work) if work else busy_ms
    ideal = 2 * 1000 / work_ms
    efficiency = bulk["tasks_per_s"] / ideal
    return {
        "scenario": "payload",
        "tasks": tasks,
        "payload_bytes": size,
        "agents": f"2 × busy backend ({busy_ms} ms of CPU), 1 slot each",
        "bulk": bulk,
        "work_ms_median": round(work_ms, 3),
        "ideal_tasks_per_s": round(ideal, 1),
        "efficiency": round(efficiency, 3),
        "targets": {"efficiency": TARGET_EFFICIENCY, "met": efficiency >= TARGET_EFFICIENCY},
        "runtime_s": round(time.perf_counter() - started, 2),
        "machine": machine(),
    }


@click.command("overhead")
@click.option("--tasks", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--sequential", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option("--normal-only", is_flag=True, help="skip the --durability full run")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def overhead_command(
    tasks: int, sequential: int, size: int, normal_only: bool, as_json: bool
) -> None:
    """Master overhead: no-op agents, 1 KB tasks, bulk tasks/s and round-trip latency."""
    durabilities = ("normal",) if normal_only else ("normal", "full")
    result = run_overhead(tasks, sequential, size, durabilities)
    if as_json:
        click.echo(json.dumps(result))
        return
    for name, run in result["durability"].items():
        trip = run["round_trip_ms"]
        click.echo(
            f"durability {name}: {run['bulk']['tasks_per_s']:.0f} tasks/s over {tasks} tasks; "
            f"round trip p50 {trip['p50']:.3f} ms, p99 {trip['p99']:.3f} ms"
        )
    click.echo(f"fsync p50 {result['fsync_ms']['p50']:.3f} ms, p99 {result['fsync_ms']['p99']:.3f}")


@click.command("payload")
@click.option("--tasks", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--busy-ms", default=5.0, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def payload_command(tasks: int, size: int, busy_ms: float, as_json: bool) -> None:
    """100 KB tasks of about 5 ms of CPU on 2 agents: throughput against the ideal."""
    result = run_payload(tasks, size, busy_ms)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{result['bulk']['tasks_per_s']:.0f} tasks/s, ideal {result['ideal_tasks_per_s']:.0f} "
        f"(work {result['work_ms_median']:.2f} ms): efficiency {result['efficiency']:.3f}"
    )
