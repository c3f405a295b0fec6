"""``edgesched agent``: what runs on a board."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from edgesched.cli.options import (
    CONFIG_HELP,
    LISTEN_PORT,
    LOCAL_MASTER_DIR,
    PORT,
    log_options,
    run_until_signal,
    settings_from,
)
from edgesched.logs import setup_logging


@click.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option(
    "--master-ip",
    default=None,
    help="the master's address [127.0.0.1]; several masters: a,b,c (it follows their leader)",
)
@click.option(
    "--master-port", type=PORT, default=None, help="the masters' HTTP port, the same on each [6666]"
)
@click.option(
    "--link-port", type=LISTEN_PORT, default=None, help="the master's gRPC port; 0 asks it"
)
@click.option("--token", default=None, help="join token (or EDGESCHED_TOKEN)")
@click.option("--slots", type=int, default=None, help="tasks at once; 0 = the board's")
@click.option("--device-type", default=None, help="auto|cpu|atlas310|rk3588|orin|nvidia")
@click.option("--emulate", default=None, help="atlas310|rk3588|orin: pace like that board")
@click.option("--time-scale", type=float, default=None, help="stretch emulated times [1]")
@click.option(
    "--backend",
    default=None,
    help="onnx|onnx_ep|rknn|ascend_om|filedrop|sleep|noop|busy, a comma list, or auto [onnx]",
)
@click.option("--data-dir", default=None, help="agent id and outbox [workspace/slave]")
@click.option("--threads", type=int, default=None, help="inference threads [1]")
@click.option("--busy-ms", type=float, default=None, help="busy: CPU ms per raw task [5]")
@click.option(
    "--filedrop-dir",
    "--input-dir",
    "filedrop_dir",
    default=None,
    help="filedrop: input/ and output/label/ [<data-dir>/data]",
)
@click.option(
    "--interval",
    "interval_s",
    type=float,
    default=None,
    help="filedrop: fallback scan period in s; events come first [10]",
)
@click.option("--seed", type=int, default=None, help="seeds emulation and the bandwidth trace")
@click.option(
    "--bandwidth-limit",
    "bandwidth_limit_mbps",
    type=float,
    default=None,
    help="pace incoming payloads to this many Mbit/s",
)
@click.option(
    "--bandwidth-fluctuate",
    is_flag=True,
    default=None,
    help="pace to a seeded trace fluctuating in the seed's 50-500 Mbit/s",
)
@click.option(
    "--disconnect",
    "disconnect_s",
    type=float,
    default=None,
    help="simulated churn: leave (drain, hand tasks back) every S seconds; ≤0 never [0]",
)
@click.option(
    "--reconnect",
    "reconnect_s",
    type=float,
    default=None,
    help="simulated churn: rejoin S seconds after leaving; ≤0 never leaves [20]",
)
@click.option(
    "--slow-factor",
    "slow_factor",
    type=float,
    default=None,
    help="emulation only: a straggler; emulated service times × this during the window [1]",
)
@click.option(
    "--slow-after",
    "slow_after_s",
    type=float,
    default=None,
    help="emulation only: the slow window starts S seconds after the agent starts [0]",
)
@click.option(
    "--slow-for",
    "slow_for_s",
    type=float,
    default=None,
    help="emulation only: the slow window lasts S seconds; 0 = no window [0]",
)
@click.option("--tls-cert", default=None, help="this agent's certificate (mutual TLS)")
@click.option("--tls-key", default=None, help="its private key")
@click.option("--tls-ca", default=None, help="CA of the master's certificate: TLS when set")
@log_options
def agent(config: str | None, log_level: str, log_format: str, **flags: Any) -> None:
    """Run an agent: dial the master, run tasks, return results."""
    setup_logging(log_level, log_format)
    settings = settings_from(config, agent=flags)
    if not settings.agent.token:
        from edgesched.master.token import read_token

        # on the master's machine (the seed's one-machine layout) its join token is at hand
        settings.agent.token = read_token(LOCAL_MASTER_DIR, "join") or ""
    if not settings.agent.token:
        raise click.UsageError(
            f"a join token is needed: --token or EDGESCHED_TOKEN (none in {LOCAL_MASTER_DIR})"
        )

    async def run(stop: asyncio.Event) -> None:
        from edgesched.agent.agent import Agent
        from edgesched.agent.link import Refused

        try:
            await Agent(settings).run(stop)
        except Refused as exc:
            click.echo(f"error: the master refused this agent: {exc}", err=True)
            sys.exit(3)

    run_until_signal(run)
