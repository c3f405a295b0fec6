"""``edgesched bench memory``: does anything leak? Real processes on loopback, sampled by pid.

Three parts, each on its own cluster of real processes:

- ``agent``: one agent with the real ``onnx`` backend runs ``--inferences`` real inferences on
  synthetic document pages; its RSS is sampled after ``--baseline-at`` (100) tasks, at every
  checkpoint and at the end. Gate: it grew by at most 5 MB (10^6 bytes) from the baseline.
- ``master``: ``--master-tasks`` (100,000) tasks through the master with fast no-op agents; its
  RSS is sampled at ``--master-sample-at`` (20,000), every ``--master-sample-every`` and at
  the end. Gate: the end is within ±10 % of the sample at 20,000.
- ``idle``: an agent with the onnx backend that has joined and does nothing: CPU (percent of
  one core) and RSS over ``--idle-s`` (30 s); the master's beside it. Measured on the agent of
  the ``agent`` part before its first task when both parts run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
import httpx

from edgesched.bench.harness import (
    MB,
    BenchError,
    Deadline,
    LoadClient,
    cpu_seconds,
    dir_stats,
    emit,
    http,
    idle_usage,
    local_cluster,
    pid_of,
    progress,
    rss_bytes,
    run_options,
    slope_per,
    wait_devices,
    work_dir,
)
from edgesched.demo.cluster import LocalCluster
from edgesched.errors import EdgeschedError

PARTS = ("agent", "master", "idle")
AGENT_GATE_BYTES = 5 * MB
MASTER_GATE_FRACTION = 0.10


# ---- payloads ------------------------------------------------------------------------------


def page_pictures(count: int, width: int, seed: int = 7) -> list[bytes]:
    """``count`` synthetic document pages (the demo's), ``width`` pixels wide, as JPEG."""
    from edgesched.demo.pages import generate_page, page_seed

    height = round(width * 1754 / 1240)
    out = []
    for index in range(1, count + 1):
        image, _ = generate_page(page_seed(seed, index), width, height)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def small_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def noop_available() -> bool:
    """The ``noop`` backend and the raw ``echo`` task type exist in this edgesched."""
    from edgesched.agent.backends.registry import BACKENDS
    from edgesched.config import Settings

    echo = Settings().tasktypes.get("echo")
    return "noop" in BACKENDS and echo is not None and echo.kind == "raw"


# ---- parts ---------------------------------------------------------------------------------


def _checkpoints(total: int, first: int, every: int) -> list[int]:
    points = {min(first, total), total}
    if every > 0:
        points.update(range(every, total + 1, every))
    return sorted(p for p in points if p >= 1)


def _load(client: LoadClient) -> dict[str, Any]:
    stats = asyncio.run(client.run())
    if stats.accepted == 0:
        raise BenchError(f"the master accepted no task: {stats.first_refusal}")
    return stats.as_dict()


def run_agent_part(
    out: dict[str, Any],
    root: Path,
    deadline: Deadline,
    inferences: int,
    baseline_at: int,
    every: int,
    pictures: int,
    page_width: int,
    window: int,
    idle_s: float,
    settle_s: float,
    with_idle: bool,
) -> None:
    """The real onnx agent: idle first (when asked; ``out["idle"]``), then ``inferences`` real
    inferences (``out["agent"]``)."""
    images = page_pictures(pictures, page_width)
    with local_cluster(root) as cluster:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"))
        cluster.start_agent("agent", ["--backend", "onnx", "--device-type", "cpu"])
        wait_devices(cluster, 1, deadline)
        pids = {"agent": pid_of(cluster, "agent"), "master": pid_of(cluster, "master")}
        if with_idle:
            time.sleep(deadline.cap(settle_s, "letting the agent settle"))
            out["idle"] = {"agent_backend": "onnx", **idle_usage(pids, idle_s, deadline)}
            progress(f"idle: {out['idle']}")
        if inferences <= 0:
            return
        points = set(_checkpoints(inferences, baseline_at, every))
        samples: list[dict[str, Any]] = []
        rss_before = rss_bytes(pids["agent"])
        started = time.monotonic()

        def on_finished(count: int) -> None:
            if count in points:
                samples.append(
                    {
                        "inferences": count,
                        "agent_rss_bytes": rss_bytes(pids["agent"]),
                        "master_rss_bytes": rss_bytes(pids["master"]),
                        "elapsed_s": round(time.monotonic() - started, 2),
                    }
                )
                progress(f"agent: {samples[-1]}")

        client = LoadClient(
            cluster.grpc_target,
            cluster.api_token,
            "layout",
            lambda i: (f"page-{i % len(images)}.jpg", images[i % len(images)]),
            inferences,
            deadline,
            window=window,
            streams=1,
            stall_s=120.0,
            on_finished=on_finished,
        )
        load = _load(client)
        base_at = min(baseline_at, inferences)
        base = next(s for s in samples if s["inferences"] == base_at)
        end = samples[-1]
        growth = end["agent_rss_bytes"] - base["agent_rss_bytes"]
        after = [(s["inferences"], s["agent_rss_bytes"]) for s in samples if s is not base]
        trend = [(base_at, base["agent_rss_bytes"]), *after]
        out["agent"] = {
            "backend": "onnx",
            "inferences": inferences,
            "pictures": len(images),
            "picture_bytes_mean": round(sum(map(len, images)) / len(images)),
            "page_width": page_width,
            "baseline_at": base_at,
            "rss_before_first_bytes": rss_before,
            "rss_baseline_bytes": base["agent_rss_bytes"],
            "rss_end_bytes": end["agent_rss_bytes"],
            "rss_max_bytes": max(s["agent_rss_bytes"] for s in samples),
            "growth_bytes": growth,
            "growth_mb": round(growth / MB, 3),
            "slope_bytes_per_1000": round(slope_per(trend, 1000), 1),
            "ms_per_inference": round(1000 * load["seconds"] / max(1, load["finished"]), 2),
            "samples": samples,
            "load": load,
            "gate": {
                "limit_mb": AGENT_GATE_BYTES / MB,
                "passed": growth <= AGENT_GATE_BYTES and load["done"] == inferences,
            },
        }


def run_master_part(
    root: Path,
    deadline: Deadline,
    tasks: int,
    sample_at: int,
    every: int,
    agents: int,
    slots: int,
    window: int,
    streams: int,
    payload_bytes: int,
    backend: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``tasks`` tasks through one master with fast agents; the master's RSS along the way.
    ``env`` goes to the master only (``EDGESCHED_SCHEDULING_…`` settings)."""
    if backend == "auto":
        backend = "noop" if noop_available() else "sleep"
    if backend == "noop":
        task_type, payload, name = "echo", os.urandom(payload_bytes), "blob.bin"
    else:  # the sleep backend decodes what it gets: a small real picture, the layout type
        task_type, payload, name = "layout", small_jpeg(), "small.jpg"
    with local_cluster(root) as cluster:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"), env=env)
        for n in range(1, agents + 1):
            cluster.start_agent(
                f"agent-{n}", ["--backend", backend, "--device-type", "cpu", "--slots", str(slots)]
            )
        wait_devices(cluster, agents, deadline)
        master_pid = pid_of(cluster, "master")
        points = set(_checkpoints(tasks, sample_at, every))
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        cpu0 = cpu_seconds(master_pid)
        rss_start = rss_bytes(master_pid)

        def on_finished(count: int) -> None:
            if count in points:
                samples.append(
                    {
                        "tasks": count,
                        "master_rss_bytes": rss_bytes(master_pid),
                        "elapsed_s": round(time.monotonic() - started, 2),
                    }
                )
                progress(f"master: {samples[-1]}")

        client = LoadClient(
            cluster.grpc_target,
            cluster.api_token,
            task_type,
            lambda i: (name, payload),
            tasks,
            deadline,
            window=window,
            streams=streams,
            stall_s=60.0,
            on_finished=on_finished,
        )
        load = _load(client)
        cpu_used = cpu_seconds(master_pid) - cpu0
        at = min(sample_at, tasks)
        ref = next(s for s in samples if s["tasks"] == at)
        end = samples[-1]
        change = (end["master_rss_bytes"] - ref["master_rss_bytes"]) / ref["master_rss_bytes"]
        health = http(cluster, "GET", "/healthz")
        summary = http(cluster, "GET", "/api/v1/summary")
        after = [(s["tasks"], s["master_rss_bytes"]) for s in samples if s["tasks"] >= at]
        return {
            "backend": backend,
            "master_env": env or {},
            "task_type": task_type,
            "payload_bytes": len(payload),
            "tasks": tasks,
            "agents": agents,
            "slots_per_agent": slots,
            "window": window,
            "streams": streams,
            "sample_at": at,
            "rss_start_bytes": rss_start,
            "rss_at_sample_bytes": ref["master_rss_bytes"],
            "rss_end_bytes": end["master_rss_bytes"],
            "change_fraction": round(change, 4),
            "slope_bytes_per_10000": round(slope_per(after, 10_000), 1),
            "master_cpu_us_per_task": round(1e6 * cpu_used / max(1, load["finished"]), 1),
            "samples": samples,
            "load": load,
            "tasks_pending_after": health.get("tasks_pending"),
            "journal_counts_after": summary.get("tasks"),
            "journal_bytes": _journal_bytes(cluster),
            "upload_left": dir_stats(cluster.master_dir / "upload"),
            "gate": {
                "limit_fraction": MASTER_GATE_FRACTION,
                "passed": abs(change) <= MASTER_GATE_FRACTION and load["done"] == tasks,
            },
        }


def _journal_bytes(cluster: LocalCluster) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = cluster.master_dir / f"edgesched.db{suffix}"
        if path.exists():
            total += path.stat().st_size
    return total


# ---- the command ---------------------------------------------------------------------------


@click.command("memory")
@click.option(
    "--inferences",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="agent part: real inferences",
)
@click.option(
    "--baseline-at",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="agent part: the RSS the end is compared with is taken after this many",
)
@click.option(
    "--checkpoint-every",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="agent part: an RSS sample every N inferences (0: baseline and end only)",
)
@click.option(
    "--pictures",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="distinct synthetic pages, sent in turn",
)
@click.option(
    "--page-width",
    default=620,
    show_default=True,
    type=click.IntRange(min=64),
    help="pixels (A4 proportions)",
)
@click.option(
    "--agent-window",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="agent part: unfinished tasks at most",
)
@click.option(
    "--master-tasks",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="master part: tasks",
)
@click.option(
    "--master-sample-at",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="master part: the RSS the end is compared with",
)
@click.option(
    "--master-sample-every",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="master part: an RSS sample every N tasks (0: reference and end only)",
)
@click.option("--master-agents", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--agent-slots",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="master part: slots of each fast agent",
)
@click.option(
    "--window",
    default=2000,
    show_default=True,
    type=click.IntRange(min=1),
    help="master part: unfinished tasks at most (the master allows 10,000 per client)",
)
@click.option(
    "--streams",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="master part: SubmitStream calls at once",
)
@click.option("--payload-bytes", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--master-backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "noop", "sleep"]),
    help="master part: noop runs the raw echo task type; sleep decodes a small JPEG "
    "(layout); auto: noop where this edgesched has it",
)
@click.option(
    "--master-env",
    "master_env",
    multiple=True,
    metavar="NAME=VALUE",
    help="master part: an environment variable for the master only, e.g. "
    "EDGESCHED_SCHEDULING_TASK_DEADLINE_S=20 (repeatable)",
)
@click.option(
    "--idle-s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="idle part: seconds measured",
)
@click.option(
    "--settle-s",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="idle part: wait after the agent joined before measuring",
)
@click.option(
    "--part",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    help="run only these parts (repeatable) [all]",
)
@run_options(timeout_s=10_800.0)
def memory_command(
    inferences: int,
    baseline_at: int,
    checkpoint_every: int,
    pictures: int,
    page_width: int,
    agent_window: int,
    master_tasks: int,
    master_sample_at: int,
    master_sample_every: int,
    master_agents: int,
    agent_slots: int,
    window: int,
    streams: int,
    payload_bytes: int,
    master_backend: str,
    master_env: tuple[str, ...],
    idle_s: float,
    settle_s: float,
    parts: tuple[str, ...],
    timeout_s: float,
    workdir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    """RSS of a real onnx agent over many inferences, of the master over many tasks, and an
    idle agent's CPU and RSS; real processes on loopback, every one stopped at the end."""
    chosen = set(parts or PARTS)
    env: dict[str, str] = {}
    for item in master_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--master-env")
        env[name] = value
    deadline = Deadline.after(timeout_s)
    started = time.monotonic()
    result: dict[str, Any] = {"benchmark": "memory", "parts": [p for p in PARTS if p in chosen]}
    errors: dict[str, str] = {}
    with work_dir(workdir, keep) as root:
        if "agent" in chosen or "idle" in chosen:
            name = "agent" if "agent" in chosen else "idle"
            with _part(name, errors):
                run_agent_part(
                    result,
                    root / "agent",
                    deadline,
                    inferences if "agent" in chosen else 0,
                    baseline_at,
                    checkpoint_every,
                    pictures,
                    page_width,
                    agent_window,
                    idle_s,
                    settle_s,
                    with_idle="idle" in chosen,
                )
        if "master" in chosen:
            with _part("master", errors):
                result["master"] = run_master_part(
                    root / "master",
                    deadline,
                    master_tasks,
                    master_sample_at,
                    master_sample_every,
                    master_agents,
                    agent_slots,
                    window,
                    streams,
                    payload_bytes,
                    master_backend,
                    env,
                )
        if keep or workdir is not None:
            result["workdir"] = str(root)
    result["gates"] = {
        name: result[name]["gate"]["passed"] if name in result else False
        for name in ("agent", "master")
        if name in chosen
    }
    if errors:
        result["errors"] = errors
    result["runtime_s"] = round(time.monotonic() - started, 2)
    emit(result, as_json, _summary)
    if errors:
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in errors.items()))


@contextlib.contextmanager
def _part(name: str, errors: dict[str, str]) -> Iterator[None]:
    """A part that fails is reported (and the command fails at the end); the others run."""
    try:
        yield
    except (BenchError, EdgeschedError, grpc.RpcError, httpx.HTTPError) as exc:
        errors[name] = str(exc) or type(exc).__name__
        progress(f"{name} part failed: {errors[name]}")


def _summary(result: dict[str, Any]) -> str:
    lines = []
    if "idle" in result:
        idle = result["idle"]
        lines.append(
            f"idle ({idle['seconds']:.0f} s): agent ({idle['agent_backend']}) "
            f"{idle['agent']['cpu_percent_of_core']:.2f} % of a core, "
            f"RSS {idle['agent']['rss_mb']:.1f} MB; master "
            f"{idle['master']['cpu_percent_of_core']:.2f} %, RSS {idle['master']['rss_mb']:.1f} MB"
        )
    if "agent" in result:
        a = result["agent"]
        lines.append(
            f"agent (onnx, {a['inferences']} inferences, {a['ms_per_inference']} ms each): RSS "
            f"{a['rss_baseline_bytes'] / MB:.1f} MB after {a['baseline_at']}, "
            f"{a['rss_end_bytes'] / MB:.1f} MB at the end: {a['growth_mb']:+.2f} MB "
            f"(gate ≤ {a['gate']['limit_mb']:g} MB: {'pass' if a['gate']['passed'] else 'FAIL'});"
            f" trend {a['slope_bytes_per_1000'] / MB:+.3f} MB per 1000"
        )
    if "master" in result:
        m = result["master"]
        lines.append(
            f"master ({m['tasks']} tasks, {m['backend']} agents, "
            f"{m['load']['throughput_per_s']} tasks/s): RSS "
            f"{m['rss_at_sample_bytes'] / MB:.1f} MB at {m['sample_at']}, "
            f"{m['rss_end_bytes'] / MB:.1f} MB at the end: {m['change_fraction']:+.1%} "
            f"(gate ±{m['gate']['limit_fraction']:.0%}: "
            f"{'pass' if m['gate']['passed'] else 'FAIL'})"
        )
    lines.append(f"ran in {result['runtime_s']:.1f} s")
    return "\n".join(lines)
