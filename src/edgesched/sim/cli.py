"""``edgesched bench``: deterministic benchmarks on the simulator (simulated time, quick to run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgesched.sim.bench_makespan import run_makespan


@click.group("bench")
def bench_command() -> None:
    """Benchmarks that drive the scheduling core with simulated devices and time."""


@bench_command.command("makespan")
@click.option("--tasks", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--plot",
    default="docs/makespan.png",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to draw the chart (PNG)",
)
@click.option("--no-plot", is_flag=True, help="draw no chart (matplotlib not needed)")
def makespan_command(tasks: int, seed: int, as_json: bool, plot: Path, no_plot: bool) -> None:
    """One burst of tasks on 1 atlas310, 2 rk3588 and 1 orin: every strategy against the bound."""
    try:
        result = run_makespan(tasks, seed, None if no_plot else plot)
    except ImportError as exc:
        raise click.UsageError(f"{exc}: install matplotlib, or pass --no-plot") from exc
    if as_json:
        click.echo(json.dumps(result, sort_keys=False))
        return
    click.echo(_table(result))


def _table(result: dict[str, Any]) -> str:
    lb = result["lower_bound_s"]
    lines = [
        f"{result['tasks']} tasks, seed {result['seed']}: lower bound {lb:.3f} s "
        f"(links-capped estimate {result['bound_terms']['links_s']:.3f} s)",
        f"{'strategy':<12}{'makespan s':>12}{'× LB':>8}  tasks per device",
    ]
    for name, r in result["strategies"].items():
        per_device = " ".join(f"{d}={n}" for d, n in r["tasks_per_device"].items())
        lines.append(f"{name:<12}{r['makespan_s']:>12.3f}{r['ratio_to_lb']:>8.3f}  {per_device}")
    gates = ", ".join(f"{k}={v}" for k, v in result["gates"].items())
    lines.append(f"gates: {gates}; ran in {result['runtime_s']:.2f} s")
    if "plot" in result:
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)
