"""``edgesched client``: send pictures, receive results (the base install: a board may run it)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from edgesched.cli.options import LOCAL_MASTER_DIR, PORT


@click.group()
def client() -> None:
    """Client tools: send pictures, receive results."""


@client.command("send")
@click.option(
    "-H",
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="the master; several masters: a,b,c (it follows their leader; not with --legacy)",
)
@click.option(
    "-P", "--port", type=PORT, default=9999, show_default=True, help="their gRPC port (each's)"
)
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
    /recv_rst receiver (`edgesched client recv`); it talks to one address (with several
    masters: a virtual IP or a DNS name in front of them).
    """
    from edgesched.client.files import list_pictures
    from edgesched.client.report import print_report
    from edgesched.client.send import Sender, TlsFiles, write_labels
    from edgesched.errors import ConfigError
    from edgesched.master.token import read_token
    from edgesched.masters import parse_masters

    try:
        targets = [str(a) for a in parse_masters(host, port, "--host")]
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    if legacy and len(targets) > 1:
        raise click.UsageError(
            "--legacy talks to one address: put a virtual IP or a DNS name in front of the masters"
        )
    paths = list_pictures(Path(directory), limit)
    if not paths:
        raise click.UsageError(f"no files in {directory}")
    if legacy:
        from edgesched.client.compat.sender import send_legacy, send_legacy_batch

        (target,) = targets
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

        token = api_token or (read_token(LOCAL_MASTER_DIR, "api") or "")
        tls = TlsFiles(tls_ca, tls_cert, tls_key) if tls_ca else None
        sender = Sender(targets, tasktype, client_id, workers, timeout, tick, token, tls)
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
