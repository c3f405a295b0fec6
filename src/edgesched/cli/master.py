"""``edgesched master``, ``gateway`` and ``task-manager``: the master's processes."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click

from edgesched import __version__
from edgesched.cli.options import (
    CONFIG_HELP,
    LISTEN_PORT,
    LOCAL_MASTER_DIR,
    PORT,
    log_options,
    run_until_signal,
    settings_from,
    tls_options,
)
from edgesched.errors import EdgeschedError
from edgesched.logs import setup_logging

if TYPE_CHECKING:
    from edgesched.config import Settings
    from edgesched.master.server import MasterServer


@click.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--bind", default=None, help="address to listen on [0.0.0.0]")
@click.option(
    "--port", type=LISTEN_PORT, default=None, help="gRPC port (client API, agent link) [9999]"
)
@click.option("--http-port", type=LISTEN_PORT, default=None, help="HTTP gateway port [6666]")
@click.option("--data-dir", default=None, help="journal, uploads, token [workspace/master]")
@click.option("--strategy", default=None, help="load or roundrobin [load]")
@click.option("--durability", type=click.Choice(["normal", "full"]), default=None)
@click.option(
    "--journal",
    default=None,
    help="postgresql://user@host:port/db: a PostgreSQL journal several masters share, one "
    "leading [SQLite in --data-dir]",
)
@click.option(
    "--advertise",
    default=None,
    help="the host other masters send clients and agents to when this one leads [--bind]",
)
@click.option(
    "--keep-upload", is_flag=True, default=None, help="keep seed upload files after tasks end"
)
@click.option(
    "--upload-dir",
    "--upload_path",
    "--upload-path",
    "upload_dir",
    default=None,
    help="where seed uploads are saved [<data-dir>/upload]",
)
@click.option("--result-port", type=PORT, default=None, help="seed clients' /recv_rst port [8888]")
@click.option(
    "--repair",
    is_flag=True,
    default=False,
    help="mend a journal refused at start (re-journal tasks from their payloads), then run",
)
@tls_options
@log_options
def master(config: str | None, log_level: str, log_format: str, **flags: Any) -> None:
    """Run the master: task intake (gRPC) and gateway (HTTP) in one process."""
    setup_logging(log_level, log_format)
    _serve_master(config, flags, role="master")


def _serve_master(config: str | None, flags: dict[str, Any], role: str) -> None:
    from edgesched.core.strategies import canonical_strategy

    scheduling = {"strategy": flags.pop("strategy")}
    repair = bool(flags.pop("repair", False))
    settings = settings_from(config, master=flags, scheduling=scheduling)
    try:
        settings.scheduling.strategy = canonical_strategy(settings.scheduling.strategy)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc

    from edgesched.master.stores import uses_postgres

    if uses_postgres(settings):
        if repair:
            raise click.UsageError("--repair mends a SQLite journal; it has no use with --journal")
        _serve_roles(settings, role)
        return

    async def run(stop: asyncio.Event) -> None:
        from edgesched.master.server import MasterServer

        if repair:
            from edgesched.master.repair import repair as repair_journal

            for line in await repair_journal(settings):
                click.echo(f"repair: {line}")
        server = MasterServer(settings)
        await server.start()
        assert server.master is not None
        bind = settings.master.bind
        click.echo(
            f"edgesched {role} {__version__}: gRPC {bind}:{server.grpc_port}, "
            f"HTTP http://{bind}:{server.http_port}, data {settings.master.data_dir}",
        )
        if server.master.token_created:
            # shown once, and only to a person: a log file never holds a secret
            if sys.stdout.isatty():
                click.echo(f"join token (shown once): {server.master.token}")
            click.echo(
                "join token and API token created in "
                f"{settings.master.data_dir} (mode 0600): `edgesched token show [--api]`"
            )
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await server.stop()

    run_until_signal(run)


def _serve_roles(settings: Settings, role: str) -> None:
    """One of several masters on a PostgreSQL journal: a standby until elected, then the
    leader (docs/operations.md "High availability")."""

    async def elected(server: MasterServer, created: bool) -> None:
        bind = settings.master.bind
        click.echo(
            f"edgesched {role} {__version__}: elected leader: gRPC {bind}:{server.grpc_port}, "
            f"HTTP http://{bind}:{server.http_port}, data {settings.master.data_dir}"
        )
        if created and server.master is not None:
            if sys.stdout.isatty():
                click.echo(f"join token (shown once): {server.master.token}")
            click.echo(
                "join token and API token created, shared with the other masters through the "
                "database: `edgesched token show [--api]`"
            )
        sys.stdout.flush()

    async def run(stop: asyncio.Event) -> None:
        from edgesched.master.roles import Roles

        roles = Roles(settings, on_elected=elected)
        database = settings.master.journal.rsplit("@", 1)[-1]  # never a password
        click.echo(
            f"edgesched {role} {__version__}: one of the masters sharing {database}; a standby "
            "until elected"
        )
        sys.stdout.flush()
        await roles.run(stop)

    run_until_signal(run)


@click.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option(
    "--task",
    "--upload-dir",
    "upload_dir",
    default=None,
    help="upload directory [<data-dir>/upload]",
)
@click.option("--bind", default=None, help="address to listen on [0.0.0.0]")
@click.option("--http-port", type=LISTEN_PORT, default=None, help="HTTP port [6666]")
@click.option(
    "--link-port", "port", type=LISTEN_PORT, default=9998, show_default=True, help="gRPC port"
)
@click.option("--data-dir", default=None, help="journal, uploads, token [workspace/master]")
@click.option("--strategy", default=None, help="load or roundrobin [load]")
@click.option("--durability", type=click.Choice(["normal", "full"]), default=None)
@click.option("--keep-upload", is_flag=True, default=None, help="keep uploads after delivery")
@click.option("--result-port", type=PORT, default=None, help="seed clients' /recv_rst port [8888]")
@tls_options
@log_options
def gateway(config: str | None, log_level: str, log_format: str, **flags: Any) -> None:
    """The seed's split layout: the gateway (HTTP, scheduler, journal, agent link).

    Runs the same master as `edgesched master`; its gRPC port (agents and native clients) moves to
    --link-port so that `edgesched task-manager` can keep the seed's 9999.
    """
    setup_logging(log_level, log_format)
    _serve_master(config, flags, role="gateway")


@click.command("task-manager")
@click.option("-p", "--port", type=LISTEN_PORT, default=9999, show_default=True, help="gRPC port")
@click.option("--bind", default="0.0.0.0", show_default=True)
@click.option("-s", "--strategy", default="load", show_default=True, help="load or roundrobin")
@click.option(
    "-u",
    "--upload_path",
    "--upload-path",
    "upload_path",
    default=None,
    help="accepted for the seed's scripts; uploads are stored by the gateway (its --task)",
)
@click.option(
    "--gateway",
    default="",
    help="the gateway's URL [http://127.0.0.1:<port in <data-dir>/endpoints.json, else 6666>]",
)
@click.option(
    "--api-token",
    envvar="EDGESCHED_API_TOKEN",
    default="",
    help="the gateway's API token [read from <data-dir>/api-token at each forward]",
)
@click.option(
    "--data-dir",
    default=LOCAL_MASTER_DIR,
    show_default=True,
    help="the gateway's data directory, when it runs on this machine",
)
@log_options
def task_manager(
    port: int,
    bind: str,
    strategy: str,
    upload_path: str | None,
    gateway: str,
    api_token: str,
    data_dir: str,
    log_level: str,
    log_format: str,
) -> None:
    """The seed's split layout: ImageUpload intake that forwards pictures to the gateway.

    A client is answered only after the gateway journaled the task. Beside the gateway it
    finds the gateway's port and API token itself; on another machine give --gateway and
    --api-token (or EDGESCHED_API_TOKEN).
    """
    from edgesched.core.strategies import canonical_strategy
    from edgesched.master.compat.taskmanager import TaskManager

    setup_logging(log_level, log_format)
    try:
        chosen = canonical_strategy(strategy)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc

    async def run(stop: asyncio.Event) -> None:
        manager = TaskManager(gateway, bind, port, chosen, api_token=api_token, data_dir=data_dir)
        bound = await manager.start()
        where = gateway or f"the gateway of {data_dir}"
        click.echo(f"edgesched task-manager {__version__}: gRPC {bind}:{bound} → {where}")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await manager.stop()

    run_until_signal(run)
