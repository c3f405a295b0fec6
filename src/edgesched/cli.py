"""The ``edgesched`` command: thin — flags become settings, settings go to the app."""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from edgesched import __version__, extras
from edgesched.config import Settings, load_settings, render_toml
from edgesched.errors import EdgeschedError
from edgesched.logs import setup_logging

CONFIG_HELP = "directory holding edgesched.toml"
#: where a master on this machine keeps its tokens (its default --data-dir, from this folder)
LOCAL_MASTER_DIR = "workspace/master"

#: commands defined in other modules, imported only when that command runs; their summaries
#: list them in `edgesched --help` without importing them (a unit test keeps the two equal)
LAZY_COMMANDS = {
    "probe": (
        "edgesched.agent.probe_cli:probe_command",
        "Print what this machine would report and which probe produced each metric.",
    ),
    "bench": (
        "edgesched.tools.bench.cli:bench_command",
        "Benchmarks: the simulator's makespan, and real runs of the master and agents.",
    ),
    "certs": (
        "edgesched.certs:certs_command",
        "A private CA and TLS certificates for the master and the agents.",
    ),
    "chaos": (
        "edgesched.tools.chaos.cli:chaos_command",
        "Kills masters and agents at random (seeded) under load, then grades the run by an "
        "independent ledger.",
    ),
}

#: commands that need more than the base install (what a board has), and the extra they need
NEEDS_EXTRA = {
    "master": "master",
    "gateway": "master",
    "task-manager": "master",
    "demo": "all",  # a master and agents running the real model
    "bench": "master",
    "chaos": "master",
    "certs": "master",
    "tasks": "master",
    "devices": "master",
    "status": "master",
}


class Commands(click.Group):
    """The top-level group: each command imports only what it needs.

    A board has the base install only, so ``edgesched agent`` must not import the master's, the
    benchmarks' or the CA's modules: commands defined elsewhere load on first use, and a command
    that needs an extra checks for it when it runs (its ``--help`` still works) and otherwise
    says in one line which extra to install, exit status 2, instead of a traceback.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            extra = NEEDS_EXTRA.get(cmd_name)
            if extra and extras.missing(extra):
                # its module may import the extra: a stand-in that only says what is missing
                stand_in = click.Command(
                    cmd_name,
                    help=LAZY_COMMANDS[cmd_name][1],
                    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                )
                _require_extra(stand_in, cmd_name, extra)
                return stand_in
            module, attribute = LAZY_COMMANDS[cmd_name][0].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but commands not loaded yet are listed by their summary, unimported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=LAZY_COMMANDS[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name in NEEDS_EXTRA:
            _require_extra(cmd, name, NEEDS_EXTRA[name])
        super().add_command(cmd, name)


def _require_extra(command: click.Command, name: str, extra: str) -> None:
    """Makes ``command`` check that ``extra`` is installed before it runs."""
    inner = command.callback

    def checked(*args: Any, **kwargs: Any) -> Any:
        absent = extras.missing(extra)
        if absent:
            click.echo(
                f"edgesched {name} needs edgesched[{extra}] ({', '.join(absent)} not "
                f"installed): {extras.install_hint(extra)}",
                err=True,
            )
            sys.exit(2)
        return inner(*args, **kwargs) if inner is not None else None

    command.callback = functools.update_wrapper(checked, inner) if inner else checked


def _settings(config: str | None, **sections: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, overrides=sections)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc


def _run_until_signal(main: Any) -> None:
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


#: a port to connect to (a value past 65535 would wrap around: 65599 is port 63)
PORT = click.IntRange(1, 65535)
#: a port to listen on: 0 picks a free one
LISTEN_PORT = click.IntRange(0, 65535)


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


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="edgesched")
def main() -> None:
    """edgesched: spread AI-inference tasks over heterogeneous edge boards."""


# ---- master ----------------------------------------------------------------------------


@main.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--bind", default=None, help="address to listen on [0.0.0.0]")
@click.option(
    "--port", type=LISTEN_PORT, default=None, help="gRPC port (client API, agent link) [9999]"
)
@click.option("--http-port", type=LISTEN_PORT, default=None, help="HTTP gateway port [6666]")
@click.option("--data-dir", default=None, help="journal, uploads, token [workspace/master]")
@click.option("--strategy", default=None, help="load or roundrobin [load]")
@click.option("--durability", type=click.Choice(["normal", "full"]), default=None)
@click.option("--keep-upload", is_flag=True, default=None, help="keep payloads after tasks end")
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
    settings = _settings(config, master=flags, scheduling=scheduling)
    try:
        settings.scheduling.strategy = canonical_strategy(settings.scheduling.strategy)
    except EdgeschedError as exc:
        raise click.UsageError(str(exc)) from exc

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

    _run_until_signal(run)


@main.command()
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


@main.command("task-manager")
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
    default="workspace/master",
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

    _run_until_signal(run)


# ---- agent -----------------------------------------------------------------------------


@main.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--master-ip", default=None, help="the master's address [127.0.0.1]")
@click.option("--master-port", type=PORT, default=None, help="the master's HTTP port [6666]")
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
@click.option("--tls-cert", default=None, help="this agent's certificate (mutual TLS)")
@click.option("--tls-key", default=None, help="its private key")
@click.option("--tls-ca", default=None, help="CA of the master's certificate: TLS when set")
@log_options
def agent(config: str | None, log_level: str, log_format: str, **flags: Any) -> None:
    """Run an agent: dial the master, run tasks, return results."""
    setup_logging(log_level, log_format)
    settings = _settings(config, agent=flags)
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

    _run_until_signal(run)


# ---- client ----------------------------------------------------------------------------


@main.group()
def client() -> None:
    """Client tools: send pictures, receive results."""


@client.command("send")
@click.option("-H", "--host", default="127.0.0.1", show_default=True)
@click.option("-P", "--port", type=PORT, default=9999, show_default=True)
@click.option("-D", "--dir", "directory", required=True, type=click.Path(exists=True))
@click.option("-n", "--max", "limit", type=int, default=None, help="send at most N files")
@click.option("-w", "--workers", type=int, default=8, show_default=True)
@click.option("--tasktype", default="layout", show_default=True)
@click.option("--out", default="workspace/client/data/rst", show_default=True)
@click.option("--client-id", default="", help="scopes idempotency keys [host name]")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="seconds for the whole run; tasks not finished by then are named and the exit is 1",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option(
    "--per-task", is_flag=True, help="print every task's stage durations (always up to 20 tasks)"
)
@click.option("--no-progress", is_flag=True)
@click.option(
    "--api-token",
    envvar="EDGESCHED_API_TOKEN",
    default="",
    help="the API token [workspace/master/api-token when present]",
)
@click.option("--tls-ca", default="", help="CA of the master's certificate: TLS when set")
@click.option("--tls-cert", default="", help="client certificate (mutual TLS)")
@click.option("--tls-key", default="", help="its private key")
@click.option("--legacy", is_flag=True, help="speak the seed's JSON-over-gRPC ImageUpload")
@click.option("--batch", is_flag=True, help="with --legacy: one UploadImages stream")
def client_send(
    host: str,
    port: int,
    directory: str,
    limit: int | None,
    workers: int,
    tasktype: str,
    out: str,
    client_id: str,
    timeout: float,
    as_json: bool,
    no_progress: bool,
    per_task: bool,
    api_token: str,
    tls_ca: str,
    tls_cert: str,
    tls_key: str,
    legacy: bool,
    batch: bool,
) -> None:
    """Send every picture of a folder, wait for all results, write <stem>.txt label files.

    With --legacy it speaks the seed's protocol instead: results then arrive at the client's
    /recv_rst receiver (`edgesched client recv`).
    """
    from edgesched.client.files import list_pictures
    from edgesched.client.report import print_report
    from edgesched.client.send import Sender, TlsFiles, write_labels
    from edgesched.master.token import read_token

    paths = list_pictures(Path(directory), limit)
    if not paths:
        raise click.UsageError(f"no files in {directory}")
    if legacy:
        from edgesched.client.compat.sender import send_legacy, send_legacy_batch

        target = f"{host}:{port}"
        if batch:
            legacy_report = send_legacy_batch(target, paths, tasktype)
        else:
            legacy_report = send_legacy(target, paths, tasktype, workers)
        click.echo(
            f"sent {legacy_report.sent}, saved {legacy_report.saved}, failed {legacy_report.failed}"
        )
        sys.exit(0 if legacy_report.failed == 0 else 1)
    progress = None
    # a board's base install has no rich: no progress bar there
    if not no_progress and not as_json and importlib.util.find_spec("rich") is not None:
        from rich.progress import Progress

        progress = Progress(transient=True)

    async def run() -> Any:
        task_id = progress.add_task("tasks", total=len(paths)) if progress else None

        def tick(_: Any) -> None:
            if progress is not None and task_id is not None:
                progress.advance(task_id)

        token = api_token or (read_token("workspace/master", "api") or "")
        tls = TlsFiles(tls_ca, tls_cert, tls_key) if tls_ca else None
        sender = Sender(f"{host}:{port}", tasktype, client_id, workers, timeout, tick, token, tls)
        if progress is not None:
            with progress:
                return await sender.run(paths)
        return await sender.run(paths)

    report = asyncio.run(run())
    write_labels(report, Path(out))
    if as_json:
        click.echo(json.dumps(report.summary()))
    else:
        print_report(report, per_task=per_task)
    unfinished = report.unfinished
    if unfinished:
        named = ", ".join(f"{o.path.name} (task {o.task_id})" for o in unfinished[:20])
        more = f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else ""
        click.echo(
            f"error: --timeout {timeout:g} s passed: {len(unfinished)} tasks not finished: "
            f"{named}{more}; they stay queued on the master (edgesched tasks show <id>)",
            err=True,
        )
    sys.exit(0 if report.failed == 0 else 1)


@client.command("recv")
@click.option("-p", "--port", type=PORT, default=8888, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True)
@click.option("-d", "--dir", "directory", default="workspace/client/data/rst", show_default=True)
def client_recv(port: int, bind: str, directory: str) -> None:
    """Receive result label files as the seed's rst_recv does (POST /recv_rst)."""
    from edgesched.client.compat.receiver import ReceiverServer

    server = ReceiverServer((bind, port), Path(directory))
    click.echo(
        f"receiving results on http://{bind}:{server.server_address[1]}/recv_rst → {directory}"
    )
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---- config, token ---------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect the settings."""


@config.command("show")
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
def config_show(config_dir: str | None) -> None:
    """Print the effective settings (defaults → file → environment) as TOML."""
    click.echo(render_toml(_settings(config_dir)), nl=False)


@main.group()
def journal() -> None:
    """The master's journal (edgesched.db): backups; see also `edgesched master --repair`."""


@journal.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
@click.option("--data-dir", default=None, help="the master's data directory")
def journal_backup(dest: str, config_dir: str | None, data_dir: str | None) -> None:
    """Copy the journal to DEST, online (SQLite's backup API: the master may keep running)."""
    from edgesched.journal.sqlite import backup

    settings = _settings(config_dir, master={"data_dir": data_dir})
    source = Path(settings.master.data_dir) / "edgesched.db"
    try:
        tasks = backup(source, Path(dest))
    except EdgeschedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backed up {source} to {dest}: {tasks} tasks, quick_check ok")


@main.group()
def token() -> None:
    """The cluster's join token (agents) and API token (clients, operators)."""


def _token_kind(api: bool) -> str:
    return "api" if api else "join"


@token.command("show")
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
@click.option("--data-dir", default=None, help="the master's data directory")
@click.option("--api", is_flag=True, help="the API token instead of the join token")
def token_show(config_dir: str | None, data_dir: str | None, api: bool) -> None:
    """Print the join token agents need (or, with --api, the API token)."""
    from edgesched.master.token import read_token

    settings = _settings(config_dir, master={"data_dir": data_dir})
    value = read_token(settings.master.data_dir, _token_kind(api))
    if value is None:
        raise click.ClickException(
            f"no token in {settings.master.data_dir}: start the master once to create it"
        )
    click.echo(value)


@token.command("rotate")
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
@click.option("--data-dir", default=None, help="the master's data directory")
@click.option("--api", is_flag=True, help="the API token instead of the join token")
def token_rotate(config_dir: str | None, data_dir: str | None, api: bool) -> None:
    """Replace a token; a running master uses the new one at once. Agents already admitted
    keep working (they prove themselves with their own credentials)."""
    from edgesched.master.token import write_token

    settings = _settings(config_dir, master={"data_dir": data_dir})
    value = write_token(settings.master.data_dir, _token_kind(api))
    click.echo(value)


# ---- demo ------------------------------------------------------------------------------


@main.command()
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


def _register_ops() -> None:
    # tasks, devices, status: defining them imports only click (their bodies need the extra)
    from edgesched.cli_ops import register

    register(main)


_register_ops()


if __name__ == "__main__":  # pragma: no cover
    main()
