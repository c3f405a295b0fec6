"""``edgesched bench scale``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgesched.tools.bench.scale.phases import run_scale
from edgesched.tools.bench.scale.report import table


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
@click.option(
    "--task-seconds",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="then a phase with noop tasks answered by the agents while they heartbeat; 0 = none",
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
    task_seconds: float,
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
        task_seconds=task_seconds,
    )
    click.echo(json.dumps(result) if as_json else table(result))
