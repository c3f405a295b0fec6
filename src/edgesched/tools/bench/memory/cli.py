"""``edgesched bench memory``: the command, its parts run one after another, and its summary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
import httpx

from edgesched.errors import EdgeschedError
from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.tools.bench.memory.parts import PARTS, run_agent_part, run_master_part
from edgesched.tools.bench.output import emit, progress, run_options
from edgesched.tools.bench.sampling import (
    MB,
)
from edgesched.tools.testing.lifecycle import work_dir


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
    default=200_000,
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
    help="master part: submission streams at once",
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
