"""The scale benchmark's phase with tasks (issue 16, item 6): after the heartbeat-only window,
a client submits ``echo`` tasks of 1 KB to the master for ``seconds`` while the whole simulated
fleet keeps heartbeating; the simulated agents answer every assignment at once
(:mod:`edgesched.tools.bench.scale.answers`), so the master's own cost per task is what limits.

Figures: tasks/s sustained (tasks done ÷ the phase's seconds, in back-to-back bulks of
``BATCH``), the master's heartbeat handling p50/p99 over the phase (its /metrics histogram, as
the heartbeat-only window reads it), the master's CPU over the phase, and the fleet's CPU."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from edgesched.tools.bench.scale.figures import histogram_quantile, rounded
from edgesched.tools.bench.scale.measure import scrape
from edgesched.tools.bench.timing import Client
from edgesched.tools.testing.process_cluster import LocalCluster

BATCH = 1000  #: tasks per bulk submission; bulks follow each other until the phase ends
PAYLOAD_BYTES = 1024  #: as ``bench overhead``'s tasks


def task_flow(
    cluster: LocalCluster,
    master: Any,
    workers: list[Any],
    seconds: float,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Runs the phase; ``master`` and ``workers`` are psutil processes (CPU figures)."""
    payload = os.urandom(PAYLOAD_BYTES)
    batch = min(BATCH, max(10, int(seconds * 200)))  # a short smoke run still runs several

    async def flow() -> dict[str, Any]:
        async with Client(cluster).session() as client:
            await client.round_trips(payload, 10, timeout_s)  # warm up the path
            before = scrape(cluster.http_url)
            cpu_before = _cpu_s(master)
            fleet_before = sum(_cpu_s(w) for w in workers)
            started = time.perf_counter()
            bulks = []
            while time.perf_counter() - started < seconds:
                bulk = await client.bulk([payload] * batch, timeout_s)
                bulk.pop("results")
                bulks.append(bulk)
            elapsed = time.perf_counter() - started
            cpu_s = _cpu_s(master) - cpu_before
            fleet_s = sum(_cpu_s(w) for w in workers) - fleet_before
            after = scrape(cluster.http_url)
            trips = await client.round_trips(payload, 50, timeout_s)  # still under heartbeats
        handled = {le: after.get(le, 0.0) - count for le, count in before.items()}
        p50, _ = histogram_quantile(handled, 0.50)
        p99, p99_le = histogram_quantile(handled, 0.99)
        done = sum(b["done"] for b in bulks)
        return {
            "seconds": round(elapsed, 2),
            "tasks": sum(b["tasks"] for b in bulks),
            "done": done,
            "errors": [e for b in bulks for e in b["errors"]][:5],
            "bulks": len(bulks),
            "tasks_per_s": rounded(done / elapsed, 1),
            "bulk_tasks_per_s": [b["tasks_per_s"] for b in bulks],
            "heartbeats_handled": int(max(handled.values())) if handled else 0,
            "heartbeat_handling_p50_ms": rounded(p50 * 1000, 4),
            "heartbeat_handling_p99_ms": rounded(p99 * 1000, 4),
            "heartbeat_handling_p99_bucket_le_ms": rounded(p99_le * 1000, 4),
            "master_cpu_percent": rounded(cpu_s / elapsed * 100, 1),
            "fleet_cpu_percent": rounded(fleet_s / elapsed * 100, 1),
            "round_trip_ms_after": trips,
        }

    return asyncio.run(flow())


def _cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
