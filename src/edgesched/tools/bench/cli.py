"""``edgesched bench SCENARIO``: benchmarks run on purpose, each printing one JSON object.

``makespan`` runs on the simulator (simulated time, quick); the others run real processes on
loopback and take from seconds to minutes. ``make bench`` runs them all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgesched.tools.bench.output import parse_seeds


@click.group("bench")
def bench_command() -> None:
    """Benchmarks: the simulator's makespan, and real runs of the master and agents."""


@bench_command.command("makespan")
@click.option("--tasks", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--seeds", default="1-10", show_default=True, help="a range like 1-10 or a list")
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    default=None,
    help="assignments a board holds beyond its slots [scheduling.prefetch]",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--plot",
    default="docs/makespan.png",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to draw the chart (PNG)",
)
@click.option("--no-plot", is_flag=True, help="draw no chart (matplotlib not needed)")
@click.option(
    "--real",
    "real_tasks",
    type=click.IntRange(min=0),
    default=0,
    help="also run the cluster for real with this many tasks (emulated agents, sleep backend) "
    "and compare with the simulator; 0 = no real run",
)
@click.option("--time-scale", default=20.0, show_default=True, help="the real run's time scale")
def makespan_command(
    tasks: int,
    seeds: str,
    prefetch: int | None,
    as_json: bool,
    plot: Path,
    no_plot: bool,
    real_tasks: int,
    time_scale: float,
) -> None:
    """1 atlas310, 2 rk3588 and 1 orin in the simulator: every strategy against the bound.

    With --real N, the same boards run N tasks for real (emulated, on loopback) under each
    strategy, and the simulator replays the run: the makespans should agree within 10 %.
    """
    from edgesched.config import SchedulingSettings
    from edgesched.tools.bench.makespan import run_makespan

    settings = SchedulingSettings()
    if prefetch is not None:
        settings.prefetch = prefetch
    try:
        result = run_makespan(tasks, parse_seeds(seeds), None if no_plot else plot, settings)
    except ImportError as exc:
        raise click.UsageError(f"{exc}: install matplotlib, or pass --no-plot") from exc
    if real_tasks:
        from edgesched.tools.bench.agreement import run_agreement

        result["real_vs_simulated"] = run_agreement(
            real_tasks, time_scale, ("roundrobin", "load", "ect")
        )
        result["gates"]["simulator_agrees_within_10_percent"] = result["real_vs_simulated"]["agree"]
    if as_json:
        click.echo(json.dumps(result, sort_keys=False))
        return
    click.echo(_table(result))


def _table(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        f"{result['tasks']} tasks, seeds {seeds[0]}..{seeds[-1]}, prefetch {result['prefetch']}:"
        " makespan ÷ lower bound (median over seeds, worst)"
    ]
    for kind, w in result["workloads"].items():
        lines.append(f"  {kind} ({w['arrivals']})")
        for name, m in w["median"].items():
            lines.append(
                f"    {name:<12}{m['ratio_to_lb']:>7.3f}  worst {m['worst_ratio_to_lb']:.3f}"
                f"  mean latency {m['mean_latency_s'] * 1000:.1f} ms"
            )
    real = result.get("real_vs_simulated")
    if real:
        lines.append(f"  real run, {real['tasks']} tasks at time scale {real['time_scale']:g}:")
        for name, r in real["strategies"].items():
            lines.append(
                f"    {name:<12}real {r['real_makespan_s']:.2f} s, simulated "
                f"{r['simulated_makespan_s']:.2f} s ({r['difference']:.1%} apart)"
            )
    gates = ", ".join(f"{k}={v}" for k, v in result["gates"].items())
    lines.append(f"gates: {gates}; ran in {result['runtime_s']:.2f} s")
    if "plot" in result:
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)


def _register() -> None:
    """The real-process scenarios, each in its own module (imported when the group is built)."""
    from edgesched.tools.bench.failover import failover_command
    from edgesched.tools.bench.memory.cli import memory_command
    from edgesched.tools.bench.overhead import overhead_command, payload_command
    from edgesched.tools.bench.scale.cli import scale_command
    from edgesched.tools.bench.straggler import straggler_command

    bench_command.add_command(overhead_command)
    bench_command.add_command(payload_command)
    bench_command.add_command(scale_command)
    bench_command.add_command(memory_command)
    bench_command.add_command(failover_command)
    bench_command.add_command(straggler_command)


_register()
