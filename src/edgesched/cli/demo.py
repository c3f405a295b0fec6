"""``edgesched demo``: the whole cluster on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgesched.errors import EdgeschedError


@click.command()
@click.option("--tasks", type=int, default=60, show_default=True)
@click.option("--strategy", default="load", show_default=True)
@click.option("--keep", is_flag=True, help="leave the cluster running and print its URLs")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--time-scale", type=float, default=60.0, show_default=True)
@click.option("--workspace", default="workspace", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tls", is_flag=True, help="a mutual-TLS cluster (its own small CA)")
def demo(
    tasks: int,
    strategy: str,
    keep: bool,
    as_json: bool,
    time_scale: float,
    workspace: str,
    seed: int,
    tls: bool,
) -> None:
    """The whole cluster on this machine: a master, three emulated boards, a client."""
    from edgesched.core.strategies import canonical_strategy
    from edgesched.tools.demo.run import DemoOptions, run_demo

    try:
        canonical = canonical_strategy(strategy)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc
    options = DemoOptions(
        tasks=tasks,
        strategy=canonical,
        keep=keep,
        as_json=as_json,
        time_scale=time_scale,
        workspace=Path(workspace),
        seed=seed,
        tls=tls,
    )
    sys.exit(run_demo(options))
