"""``edgesched bench straggler``: one board slowed 10× for a window, with hedging on and off.

Four emulated boards of one kind (rk3588 by default: 3 slots each, 12 in all) with the sleep
backend join a master; a client submits a steady stream (a fixed rate, ``--load`` of the
cluster's capacity) for ``--duration`` seconds and reads every result as it comes. One board
(``agent-slow``) runs its tasks ``--slow-factor`` times slower for ``--slow-for`` seconds from
``--slow-at`` seconds into the stream: a board throttling when hot, an NPU shared with another
process. Four boards of one kind so that a hedge can go to any other board, and the service
time learnt for the kind (the straggler threshold is a multiple of its p95) is made mostly of
healthy boards' tasks, as on a real cluster where one board of many slows down.

Each case is a fresh cluster: the straggler with hedging off and on (``--hedging``), and the
same stream on the healthy cluster (no slow window) with hedging on (``--healthy``). Per case:
p50/p99 end-to-end latency (``timings.end_to_end_ms`` of the results), the work the boards did
for the results (service time of the winning attempts), the wasted work (``timings.wasted_ms``
and ``hedges`` where the build reports them, else 0: ``wasted_reported`` says which) and its
share of all work. ``--simulate`` runs the same cases in the simulator over many seeds instead
(:mod:`edgesched.tools.bench.hedge_sim`).
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

import click
import grpc
import httpx

from edgesched.boards import BOARD_FAMILIES, RK3588
from edgesched.config import load_settings
from edgesched.core.state import TaskState
from edgesched.errors import EdgeschedError
from edgesched.stats import percentile
from edgesched.tools.bench import hedging
from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.tools.bench.failover import agent_id
from edgesched.tools.bench.gateway import gateway, http, wait_devices
from edgesched.tools.bench.hedge_sim import (
    TARGET_HEALTHY_EXTRA,
    TARGET_P99_RATIO,
    TARGET_WASTED_SHARE,
    capacity_per_s,
    run_models,
    summary,
)
from edgesched.tools.bench.load import LoadClient
from edgesched.tools.bench.output import emit, parse_seeds, progress, run_options
from edgesched.tools.bench.payloads import small_jpeg
from edgesched.tools.testing.lifecycle import local_cluster, work_dir
from edgesched.wire import tasks as wire_tasks

SLOW = "agent-slow"
#: the agent's warning that carries its slow window (monotonic seconds, one clock per machine)
WINDOW_LOG = re.compile(r"emulated straggler: service times ×\S+ from monotonic (\S+) to (\S+)")


def _work_ms(result: wire_tasks.TaskResult) -> float:
    """The winning attempt's service time on its board, as the master counts it."""
    b = result.timings.board
    return max(0.0, b.total_ms - b.queue_ms - b.receive_ms)


def _read_window(log_path: Path, until: float) -> tuple[float, float] | None:
    """The slow window the agent logged (monotonic), waiting for its log up to ``until``."""
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        match = WINDOW_LOG.search(text)
        if match:
            return float(match.group(1)), float(match.group(2))
        if time.monotonic() > until:
            return None
        time.sleep(0.05)


def latency_figures(values: list[float]) -> dict[str, float | int | None]:
    def rounded(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 1)

    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50, "nearest_rank")),
        "p99": rounded(percentile(values, 99, "nearest_rank")),
        "max": rounded(max(values)) if values else None,
        "mean": rounded(statistics.fmean(values)) if values else None,
    }


def run_case(
    root: Path,
    deadline: Deadline,
    profile: str,
    boards: int,
    time_scale: float,
    rate: float,
    count: int,
    slow: tuple[float, float, float] | None,
    on: bool,
    lead_s: float,
) -> dict[str, Any]:
    """One fresh cluster, one stream. ``slow``: (factor, at_s into the stream, for_s) or None."""
    env = hedging.master_env(on)
    settings = load_settings(None, env=env).scheduling
    agent_args = ["--backend", "sleep", "--emulate", profile, "--time-scale", repr(time_scale)]
    with local_cluster(root) as cluster:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"), env=env)
        spawned = time.monotonic()
        names = [SLOW, *(f"agent-{i}" for i in range(1, boards))]
        for i, name in enumerate(names):
            extra = ["--seed", str(i + 1)]
            if name == SLOW and slow is not None:
                factor, at_s, for_s = slow
                extra += ["--slow-factor", repr(factor)]
                extra += ["--slow-after", repr(lead_s + at_s), "--slow-for", repr(for_s)]
            cluster.start_agent(name, agent_args + extra)
        wait_devices(cluster, boards, deadline, timeout=60)
        slow_device = agent_id(cluster, SLOW, deadline)
        window = None
        if slow is not None:
            window = _read_window(
                cluster.root / "logs" / f"{SLOW}.log",
                time.monotonic() + deadline.cap(10, "reading the slow window"),
            )
            if window is None:
                raise BenchError(f"{SLOW} logged no slow window (see its log)")
        results: list[wire_tasks.TaskResult] = []
        payload = small_jpeg((40, 160, 90))
        client = LoadClient(
            cluster.grpc_target,
            cluster.api_token,
            "layout",
            lambda i: (f"s{i}.jpg", payload),
            count,
            deadline,
            window=count + 1,  # open: the rate, not the results, sets when a task goes
            streams=1,
            on_result=results.append,
            interval_s=1 / rate,
            start_at=spawned + lead_s,
        )
        stats = asyncio.run(client.run())
        if client.started > spawned + lead_s + 1.0:
            progress(
                f"the stream started {client.started - spawned:.1f} s after the agents "
                f"(--lead {lead_s:g}): the slow window is earlier in it"
            )
        # the hedge facts (hedges, timings.wasted_ms) are in the API's task rows, not in the
        # client API's results: read each done task's row while the master still runs
        with gateway(cluster, timeout=10.0) as api:
            rows = {
                r.task_id: http(api, "GET", f"/api/v1/tasks/{r.task_id}")
                for r in results
                if wire_tasks.state_of(r) is TaskState.DONE
            }
    return _figures(
        results,
        rows,
        stats.as_dict(),
        client.started,
        rate,
        window,
        slow_device,
        settings,
        on,
        slow,
    )


def _figures(
    results: list[wire_tasks.TaskResult],
    rows: dict[str, Any],
    stats: dict[str, Any],
    started: float,
    rate: float,
    window: tuple[float, float] | None,
    slow_device: str,
    settings: Any,
    on: bool,
    slow: tuple[float, float, float] | None,
) -> dict[str, Any]:
    done = [r for r in results if wire_tasks.state_of(r) is TaskState.DONE]
    latencies = [r.timings.end_to_end_ms for r in done]
    work = sum(_work_ms(r) for r in done)
    counts = [hedging.task_counts(rows.get(r.task_id, r)) for r in done]
    wasted = sum(w for _, w in counts)
    in_window: list[float] = []
    window_s = None
    if window is not None:
        window_s = [round(window[0] - started, 2), round(window[1] - started, 2)]
        for r in done:
            index = int(r.idempotency_key.rpartition("-")[2])
            if window[0] <= started + index / rate < window[1]:
                in_window.append(r.timings.end_to_end_ms)
    return {
        "case": "straggler" if slow is not None else "healthy",
        "hedging": hedging.label(on),
        "settings": hedging.in_force(settings),
        "slow_factor": slow[0] if slow else 1.0,
        "slow_window_s": window_s,  #: in the stream's time, as the agent logged it
        "slow_device": slow_device,
        "load": stats,
        "latency_ms": latency_figures(latencies),
        "latency_submitted_in_window_ms": latency_figures(in_window) if window else None,
        "on_slow_device": sum(1 for r in done if r.device_id == slow_device),
        "extra_attempts": sum(max(0, r.attempts - 1) for r in done),
        "hedges": sum(h for h, _ in counts),
        "work_ms": round(work, 1),
        "wasted_ms": round(wasted, 1),
        "wasted_share": round(wasted / (work + wasted), 4) if work + wasted > 0 else 0.0,
        "wasted_reported": bool(done) and hedging.reported(rows.get(done[0].task_id, done[0])),
    }


def compare(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets read from the cases: p99 against the healthy cluster's, wasted shares."""
    healthy = next((c for c in cases if c["case"] == "healthy"), None)
    out: dict[str, Any] = {}
    for c in cases:
        if c["case"] != "straggler":
            continue
        key = f"straggler_hedging_{c['hedging']}"
        entry: dict[str, Any] = {"wasted_share": c["wasted_share"]}
        if healthy is not None and healthy["latency_ms"]["p99"]:
            ratio = c["latency_ms"]["p99"] / healthy["latency_ms"]["p99"]
            entry["p99_ratio_to_healthy"] = round(ratio, 2)
            entry["p99_within_target"] = ratio <= TARGET_P99_RATIO
        entry["wasted_within_target"] = c["wasted_share"] <= TARGET_WASTED_SHARE
        out[key] = entry
    if healthy is not None:
        out["healthy_hedging_on"] = {
            "wasted_share": healthy["wasted_share"],
            "extra_work_within_target": healthy["wasted_share"] <= TARGET_HEALTHY_EXTRA,
        }
    return out


def run_straggler(
    root: Path,
    deadline: Deadline,
    profile: str,
    boards: int,
    time_scale: float,
    load: float,
    duration_s: float,
    slow: tuple[float, float, float],
    modes: list[bool],
    healthy: bool,
    lead_s: float,
) -> dict[str, Any]:
    capacity = capacity_per_s(profile, boards, time_scale)
    rate = load * capacity
    count = max(1, round(rate * duration_s))
    plan: list[tuple[str, tuple[float, float, float] | None, bool]] = [
        ("straggler", slow, on) for on in modes
    ]
    if healthy:
        plan.append(("healthy", None, True))
    cases = []
    for n, (name, window, on) in enumerate(plan):
        progress(f"{name}, hedging {hedging.label(on)}: {count} tasks at {rate:.2f}/s")
        cases.append(
            run_case(
                root / f"case-{n}",
                deadline,
                profile,
                boards,
                time_scale,
                rate,
                count,
                window,
                on,
                lead_s,
            )
        )
    return {
        "benchmark": "straggler",
        "boards": f"{boards} × {profile}",
        "time_scale": time_scale,
        "capacity_per_s": round(capacity, 2),
        "load": load,
        "rate_per_s": round(rate, 3),
        "tasks": count,
        "duration_s": duration_s,
        "slow": {"factor": slow[0], "at_s": slow[1], "for_s": slow[2]},
        "hedging_supported": hedging.supported(),
        "cases": cases,
        "targets": {
            "p99_ratio_to_healthy": TARGET_P99_RATIO,
            "wasted_share": TARGET_WASTED_SHARE,
            "healthy_extra_work_share": TARGET_HEALTHY_EXTRA,
        },
        "comparison": compare(cases),
    }


@click.command("straggler")
@click.option(
    "--emulate",
    "profile",
    default=RK3588,
    show_default=True,
    type=click.Choice(list(BOARD_FAMILIES)),
    help="the board every agent emulates",
)
@click.option("--boards", default=4, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--time-scale",
    default=25.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="stretches emulated task times (rk3588: 40 ms × 25 ≈ 1 s a task)",
)
@click.option(
    "--load",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.01, max=1.0),
    help="the stream's rate as a share of the cluster's capacity",
)
@click.option(
    "--duration",
    "duration_s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="seconds of stream (tasks = rate × duration)",
)
@click.option("--slow-factor", default=10.0, show_default=True, type=click.FloatRange(min=1))
@click.option(
    "--slow-at",
    "slow_at_s",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="the slow window starts this long into the stream",
)
@click.option(
    "--slow-for",
    "slow_for_s",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="how long the slow window lasts",
)
@hedging.mode_option("the straggler runs with hedging on, off, or one of each")
@click.option(
    "--healthy/--no-healthy",
    default=True,
    show_default=True,
    help="also run the stream on the healthy cluster (no slow window), hedging on",
)
@click.option(
    "--lead",
    "lead_s",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="real runs: seconds from starting the agents to starting the stream (start-up)",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="run the cases in the simulator over --seeds, with the failure models (killed, "
    "frozen, slowed) instead of real processes",
)
@click.option("--seeds", default="1-20", show_default=True, help="--simulate: a range or list")
@run_options(timeout_s=900.0)
def straggler_command(
    profile: str,
    boards: int,
    time_scale: float,
    load: float,
    duration_s: float,
    slow_factor: float,
    slow_at_s: float,
    slow_for_s: float,
    hedging_mode: str,
    healthy: bool,
    lead_s: float,
    simulate: bool,
    seeds: str,
    timeout_s: float,
    workdir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    """One board of four slowed 10× for a window: latency and wasted work, hedging on/off."""
    started = time.monotonic()
    slow = (slow_factor, slow_at_s, slow_for_s)
    modes = hedging.choices(hedging_mode)
    if simulate:
        try:
            result = run_models(
                parse_seeds(seeds), profile, boards, time_scale, load, duration_s, slow, modes
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        result["runtime_s"] = round(time.monotonic() - started, 2)
        emit(result, as_json, summary)
        return
    deadline = Deadline.after(timeout_s)
    try:
        with work_dir(workdir, keep) as root:
            result = run_straggler(
                root,
                deadline,
                profile,
                boards,
                time_scale,
                load,
                duration_s,
                slow,
                modes,
                healthy,
                lead_s,
            )
            if keep or workdir is not None:
                result["workdir"] = str(root)
    except (BenchError, EdgeschedError, grpc.RpcError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    result["runtime_s"] = round(time.monotonic() - started, 2)
    emit(result, as_json, _summary)


def _summary(result: dict[str, Any]) -> str:
    slow = result["slow"]
    lines = [
        f"{result['boards']} at time scale {result['time_scale']:g}: {result['tasks']} tasks at "
        f"{result['rate_per_s']:g}/s ({result['load']:.0%} of {result['capacity_per_s']:g}/s); "
        f"one board ×{slow['factor']:g} from {slow['at_s']:g} s for {slow['for_s']:g} s",
    ]
    if not result["hedging_supported"]:
        lines.append("this build has no scheduling.hedging: every case ran without hedging")
    for c in result["cases"]:
        lat = c["latency_ms"]
        lines.append(
            f"  {c['case']:<10} hedging {c['hedging']:<3}  p50 {lat['p50']} ms  p99 {lat['p99']} "
            f"ms  max {lat['max']} ms  wasted {c['wasted_share']:.2%} "
            f"({c['hedges']} hedges, {c['on_slow_device']} done on the slowed board)"
            + ("" if c["wasted_reported"] else " [wasted work not reported by this build: 0]")
        )
    for key, entry in result["comparison"].items():
        parts = ", ".join(f"{k}={v}" for k, v in entry.items())
        lines.append(f"  {key}: {parts}")
    t = result["targets"]
    lines.append(
        f"targets: p99 ≤ {t['p99_ratio_to_healthy']:g} × healthy, wasted ≤ "
        f"{t['wasted_share']:.0%}, healthy extra work ≤ {t['healthy_extra_work_share']:.0%}; "
        f"ran in {result['runtime_s']:.1f} s"
    )
    return "\n".join(lines)
