"""What the command modules share: option groups, port types, settings, the signal loop."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from edgesched.config import Settings, load_settings
from edgesched.errors import EdgeschedError

CONFIG_HELP = "directory holding edgesched.toml"
#: where a master on this machine keeps its tokens (its default --data-dir, from this folder)
LOCAL_MASTER_DIR = "workspace/master"

#: a port to connect to (a value past 65535 would wrap around: 65599 is port 63)
PORT = click.IntRange(1, 65535)
#: a port to listen on: 0 picks a free one
LISTEN_PORT = click.IntRange(0, 65535)


def settings_from(config: str | None, **sections: dict[str, Any]) -> Settings:
    """The settings, a bad file or value said as a usage error."""
    try:
        return load_settings(config, overrides=sections)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc


def run_until_signal(main: Any) -> None:
    """Runs ``main(stop_event)``; SIGTERM and SIGINT set the event."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except EdgeschedError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk or a folder it may not write: said, not a traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def tls_options(func: Any) -> Any:
    """The master's security flags."""
    options = [
        click.option("--tls-cert", default=None, help="PEM certificate (gRPC and HTTP)"),
        click.option("--tls-key", default=None, help="its private key"),
        click.option("--tls-ca", default=None, help="CA that signs agents' certificates"),
        click.option(
            "--tls-require-client-cert",
            is_flag=True,
            default=None,
            help="mutual TLS: every peer shows a certificate signed by --tls-ca",
        ),
        click.option(
            "--auth",
            type=click.Choice(["off", "api", "all"]),
            default=None,
            help="API token on: nothing, the client API and changes [api], or all",
        ),
        click.option(
            "--require-auth",
            "auth",
            flag_value="all",
            default=None,
            help="the API token for everything, the seed's protocols too",
        ),
        click.option("--auth-read", is_flag=True, default=None, help="reads need it too"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def log_options(func: Any) -> Any:
    func = click.option(
        "--log-level",
        default="info",
        type=click.Choice(["debug", "info", "warning", "error"]),
        show_default=True,
    )(func)
    return click.option(
        "--log-format", default="text", type=click.Choice(["text", "json"]), show_default=True
    )(func)
