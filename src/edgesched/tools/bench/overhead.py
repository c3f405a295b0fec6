"""``overhead`` and ``payload``: what the master costs per task, measured end to end.

overhead: 2 agents with the ``noop`` backend, tasks of 1 KB through client → master → agent →
master → client with the journal on: tasks/s over a bulk run, and p50/p99 of sequential round
trips, at the default durability and again with ``--durability full``, the disk's fsync beside.

payload: 2 agents with the ``busy`` backend (one slot each, about 5 ms of CPU per task), tasks
of 100 KB: tasks/s and efficiency = tasks/s ÷ (2 × 1000 ÷ measured work ms).

Both run ``--rounds`` rounds (default 5), each right after a round of the plain gRPC hop
(:mod:`edgesched.tools.bench.reference`) with the same sizes and work, and report medians over
the rounds with the ratios to the plain hop beside: the machine is noisy, the ratios are what the
issue's gates read.

overhead ``--journal postgresql://...`` runs the master on that PostgreSQL journal (its
``payloads`` table included), and ``--journal postgresql`` on a throwaway server started for the
run (``pgserver``, durable: fsync on) on this machine; a SQLite run (durability normal) goes
first in the same run for comparison, each on a fresh database.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from typing import Any

import click

from edgesched.journal.pgschema import redact
from edgesched.tools.bench.makespan import machine
from edgesched.tools.bench.reference import (
    ReferenceClient,
    median_of,
    ratio,
    reference_servers,
)
from edgesched.tools.bench.timing import Client, fsync_ms
from edgesched.tools.testing.lifecycle import running_cluster
from edgesched.tools.testing.process_cluster import LocalCluster

TARGET_TASKS_PER_S = 5000
TARGET_P50_MS = 1.0
TARGET_EFFICIENCY = 0.85
TARGET_THROUGHPUT_RATIO = 1.0  #: × the plain gRPC hop's calls/s, measured in the same run
TARGET_P50_RATIO = 1.8  #: × the plain hop's sequential p50
TARGET_PG_TASKS_PER_S = 2000  #: the PostgreSQL journal (the server on the same machine)


def run_overhead(
    tasks: int = 2000,
    sequential: int = 300,
    size: int = 1024,
    durabilities: tuple[str, ...] = ("normal", "full"),
    timeout_s: float = 300.0,
    rounds: int = 5,
    journal: str = "",
) -> dict[str, Any]:
    """Each durability's cluster runs ``rounds`` rounds (bulk, then sequential round trips),
    each right after a round of the plain gRPC hop (:mod:`reference`) on the same payload, so
    the machine's noise falls on both; the figures are medians over the rounds."""
    started = time.perf_counter()
    payload = os.urandom(size)
    runs: dict[str, Any] = {}
    fsync: dict[str, float] = {}

    async def measure(c: LocalCluster, plain: ReferenceClient) -> dict[str, Any]:
        done: list[dict[str, Any]] = []
        async with Client(c).session() as client:
            await client.round_trips(payload, 20, timeout_s)  # warm up every path
            await plain.round_trips(payload, 20, timeout_s)
            for _ in range(rounds):
                reference = {
                    "bulk": await plain.bulk([payload] * tasks, timeout_s),
                    "round_trip_ms": await plain.round_trips(payload, sequential, timeout_s),
                }
                bulk = await client.bulk([payload] * tasks, timeout_s)
                bulk.pop("results")
                trips = await client.round_trips(payload, sequential, timeout_s)
                done.append({"bulk": bulk, "round_trip_ms": trips, "reference": reference})
        return _medians(done)

    plan: list[tuple[str, list[str]]] = [(d, ["--durability", d]) for d in durabilities]
    if journal:  # SQLite first for comparison, then PostgreSQL (both durabilities mean one)
        plan = [("normal", ["--durability", "normal"]), ("postgresql", [])]

    async def main() -> None:  # one event loop for every run: gRPC's poller stays with it
        with reference_servers(1) as targets:
            async with ReferenceClient(targets) as plain:
                for name, args in plan:
                    if name == "postgresql":
                        args = ["--journal", await asyncio.to_thread(database)]
                    agents = [["--backend", "noop", "--slots", "8"]] * 2
                    with running_cluster(agents, args) as c:
                        if not fsync:
                            fsync.update(fsync_ms(c.master_dir))
                        runs[name] = await measure(c, plain)

    server: Any = None

    def database() -> str:
        """The PostgreSQL journal's URL: the one given, or a fresh database on a throwaway
        server started now (durable, as a real one)."""
        nonlocal server
        if journal != "postgresql":
            return journal
        from edgesched.tools.testing.pgserver import PgServer

        server = PgServer(durable=True).start()
        return str(server.create_database())

    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.close()
    normal = runs.get("normal")
    first = runs["postgresql" if journal else durabilities[0]]
    pg = runs.get("postgresql")
    return {
        "scenario": "overhead",
        "tasks": tasks,
        "sequential": sequential,
        "payload_bytes": size,
        "rounds": rounds,
        "agents": "2 × noop backend, 8 slots",
        "durability": runs,
        # the first durability's (normal unless --durability full only): what the gates read
        "reference": first["reference"],
        "ratio": first["ratio"],
        "fsync_ms": fsync,
        "journal": ("throwaway PostgreSQL" if journal == "postgresql" else redact(journal))
        if journal
        else "sqlite",
        "targets": {
            "postgresql_tasks_per_s": TARGET_PG_TASKS_PER_S if journal else None,
            "postgresql_met": None
            if pg is None
            else pg["bulk"]["tasks_per_s"] >= TARGET_PG_TASKS_PER_S,
            "tasks_per_s": TARGET_TASKS_PER_S,
            "round_trip_p50_ms": TARGET_P50_MS,
            "throughput_ratio": TARGET_THROUGHPUT_RATIO,
            "p50_ratio": TARGET_P50_RATIO,
            "met": None
            if normal is None
            else {
                "tasks_per_s": normal["bulk"]["tasks_per_s"] >= TARGET_TASKS_PER_S,
                "round_trip_p50_ms": normal["round_trip_ms"]["p50"] <= TARGET_P50_MS,
                "throughput_ratio": (normal["ratio"]["throughput"] or 0) >= TARGET_THROUGHPUT_RATIO,
                "p50_ratio": (normal["ratio"]["p50"] or math.inf) <= TARGET_P50_RATIO,
            },
        },
        "runtime_s": round(time.perf_counter() - started, 2),
        "machine": machine(),
    }


def _medians(done: list[dict[str, Any]]) -> dict[str, Any]:
    """One durability's rounds → medians over them, the plain hop's beside, and the ratios."""
    bulks = [d["bulk"] for d in done]
    bulk = {
        "tasks": bulks[0]["tasks"],
        "accepted": min(b["accepted"] for b in bulks),  # per round: the worst round's
        "done": min(b["done"] for b in bulks),
        "errors": [e for b in bulks for e in b["errors"]][:5],
        "tasks_per_s": median_of(done, "bulk", "tasks_per_s"),
    }
    trips = {
        "n": done[0]["round_trip_ms"]["n"],
        "p50": median_of(done, "round_trip_ms", "p50"),
        "p99": median_of(done, "round_trip_ms", "p99"),
    }
    reference = {
        "calls_per_s": median_of(done, "reference", "bulk", "calls_per_s"),
        "p50_ms": median_of(done, "reference", "round_trip_ms", "p50"),
        "p99_ms": median_of(done, "reference", "round_trip_ms", "p99"),
    }
    return {
        "bulk": bulk,
        "round_trip_ms": trips,
        "reference": reference,
        "ratio": {
            "throughput": ratio(bulk["tasks_per_s"], reference["calls_per_s"]),
            "p50": ratio(trips["p50"], reference["p50_ms"]),
            "p99": ratio(trips["p99"], reference["p99_ms"]),
        },
        "rounds": [
            {
                "tasks_per_s": d["bulk"]["tasks_per_s"],
                "round_trip_ms": d["round_trip_ms"],
                "reference": {
                    "calls_per_s": d["reference"]["bulk"]["calls_per_s"],
                    "round_trip_ms": d["reference"]["round_trip_ms"],
                },
            }
            for d in done
        ],
    }


def run_payload(
    tasks: int = 500,
    size: int = 100_000,
    busy_ms: float = 5.0,
    timeout_s: float = 300.0,
    rounds: int = 5,
    journal: str = "",
) -> dict[str, Any]:
    """``rounds`` bulk runs, each right after one of the plain hop to two busy servers (the
    same payloads, the same work per call); medians over the rounds."""
    started = time.perf_counter()
    payloads = [os.urandom(size) for _ in range(min(tasks, 16))]
    batch = [payloads[i % len(payloads)] for i in range(tasks)]
    agents = [["--backend", "busy", "--busy-ms", str(busy_ms), "--slots", "1"]] * 2

    async def measure() -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = []
        with reference_servers(2, busy_ms) as targets, running_cluster(agents) as c:
            async with ReferenceClient(targets, busy=True) as plain, Client(c).session() as client:
                await client.round_trips(payloads[0], 10, timeout_s)  # warm up
                await plain.round_trips(payloads[0], 10, timeout_s)
                for _ in range(rounds):
                    reference = await plain.bulk(batch, timeout_s)
                    bulk = await client.bulk(batch, timeout_s)
                    results = bulk.pop("results")
                    work = [
                        r.timings.board.inference_ms
                        for r in results
                        if r.timings.board.inference_ms > 0
                    ]
                    work_ms = statistics.median(work) if work else busy_ms
                    ref_work = reference["work_ms_median"] or busy_ms
                    done.append(
                        {
                            "bulk": bulk,
                            "work_ms_median": work_ms,
                            "efficiency": bulk["tasks_per_s"] / (2 * 1000 / work_ms),
                            "reference": {
                                **reference,
                                "efficiency": reference["calls_per_s"] / (2 * 1000 / ref_work),
                            },
                        }
                    )
        return done

    done = asyncio.run(measure())
    bulks = [d["bulk"] for d in done]
    work_ms = median_of(done, "work_ms_median")
    efficiency = median_of(done, "efficiency")
    reference = {
        "calls_per_s": median_of(done, "reference", "calls_per_s"),
        "work_ms_median": median_of(done, "reference", "work_ms_median"),
        "efficiency": median_of(done, "reference", "efficiency"),
    }
    tasks_per_s = median_of(done, "bulk", "tasks_per_s")
    return {
        "scenario": "payload",
        "tasks": tasks,
        "payload_bytes": size,
        "rounds": rounds,
        "agents": f"2 × busy backend ({busy_ms} ms of CPU), 1 slot each",
        "bulk": {
            "tasks": tasks,
            "accepted": min(b["accepted"] for b in bulks),  # the worst round's
            "done": min(b["done"] for b in bulks),
            "errors": [e for b in bulks for e in b["errors"]][:5],
            "tasks_per_s": tasks_per_s,
        },
        "work_ms_median": round(work_ms, 3),
        "ideal_tasks_per_s": round(2 * 1000 / work_ms, 1),
        "efficiency": round(efficiency, 3),
        "reference": reference,
        "ratio": {
            "throughput": ratio(tasks_per_s, reference["calls_per_s"]),
            "efficiency": ratio(efficiency, reference["efficiency"]),
        },
        "rounds_figures": [
            {
                "tasks_per_s": d["bulk"]["tasks_per_s"],
                "efficiency": round(d["efficiency"], 3),
                "reference_calls_per_s": d["reference"]["calls_per_s"],
                "reference_efficiency": round(d["reference"]["efficiency"], 3),
            }
            for d in done
        ],
        "targets": {"efficiency": TARGET_EFFICIENCY, "met": efficiency >= TARGET_EFFICIENCY},
        "runtime_s": round(time.perf_counter() - started, 2),
        "machine": machine(),
    }


ROUNDS = click.option(
    "--rounds",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="rounds, each edgesched's right after the plain gRPC hop's; figures are medians",
)


@click.command("overhead")
@click.option("--tasks", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--sequential", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option("--normal-only", is_flag=True, help="skip the --durability full run")
@click.option(
    "--journal",
    default="",
    help="postgresql://...: the master on that PostgreSQL journal; 'postgresql': on a "
    "throwaway server started for the run (a SQLite run goes first, for comparison)",
)
@ROUNDS
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def overhead_command(
    tasks: int,
    sequential: int,
    size: int,
    normal_only: bool,
    journal: str,
    rounds: int,
    as_json: bool,
) -> None:
    """Master overhead: no-op agents, 1 KB tasks, bulk tasks/s and round-trip latency, beside
    a plain gRPC hop measured in the same run."""
    if journal and journal != "postgresql" and not journal.startswith("postgres"):
        raise click.BadParameter("a postgresql:// URL or 'postgresql'", param_hint="--journal")
    durabilities = ("normal",) if normal_only else ("normal", "full")
    result = run_overhead(tasks, sequential, size, durabilities, rounds=rounds, journal=journal)
    if as_json:
        click.echo(json.dumps(result))
        return
    for name, run in result["durability"].items():
        trip = run["round_trip_ms"]
        label = "journal postgresql" if name == "postgresql" else f"durability {name}"
        click.echo(
            f"{label}: {run['bulk']['tasks_per_s']:.0f} tasks/s over {tasks} tasks; "
            f"round trip p50 {trip['p50']:.3f} ms, p99 {trip['p99']:.3f} ms; "
            f"× plain hop: throughput {run['ratio']['throughput']}, p50 {run['ratio']['p50']}"
        )
    ref = result["reference"]
    click.echo(
        f"plain gRPC hop (median of {rounds}): {ref['calls_per_s']:.0f} calls/s, "
        f"p50 {ref['p50_ms']:.3f} ms, p99 {ref['p99_ms']:.3f} ms"
    )
    click.echo(f"fsync p50 {result['fsync_ms']['p50']:.3f} ms, p99 {result['fsync_ms']['p99']:.3f}")


@click.command("payload")
@click.option("--tasks", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--busy-ms", default=5.0, show_default=True, type=float)
@ROUNDS
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def payload_command(tasks: int, size: int, busy_ms: float, rounds: int, as_json: bool) -> None:
    """100 KB tasks of about 5 ms of CPU on 2 agents: throughput against the ideal, beside a
    plain gRPC hop to 2 servers doing the same work, measured in the same run."""
    result = run_payload(tasks, size, busy_ms, rounds=rounds)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{result['bulk']['tasks_per_s']:.0f} tasks/s, ideal {result['ideal_tasks_per_s']:.0f} "
        f"(work {result['work_ms_median']:.2f} ms): efficiency {result['efficiency']:.3f}; "
        f"plain hop efficiency {result['reference']['efficiency']:.3f} "
        f"(median of {rounds} rounds)"
    )
