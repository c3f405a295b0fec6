"""Operator commands: tasks, devices, status (via the REST API); config, journal, token."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from edgesched.cli.options import CONFIG_HELP, LOCAL_MASTER_DIR, settings_from
from edgesched.config import render_toml
from edgesched.errors import EdgeschedError
from edgesched.masters import from_json

if TYPE_CHECKING:
    from rich.table import Table

MASTER_HELP = (
    "the gateway's URL (or EDGESCHED_MASTER_URL); several masters: URLs comma-separated, "
    "their leader answers"
)


def master_option(func: Any) -> Any:
    return click.option(
        "--master",
        "master_url",
        envvar="EDGESCHED_MASTER_URL",
        default="http://127.0.0.1:6666",
        show_default=True,
        help=MASTER_HELP,
    )(func)


def json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")(func)


def call(method: str, master_url: str, path: str, **params: Any) -> Any:
    """One REST call; errors become a one-line message and exit status 1.

    ``master_url`` may list several masters ("http://a:6666,http://b:6666"): the call goes to
    their leader, the one a standby's 503 names, else the next that answers. Changing calls
    carry the API token (EDGESCHED_API_TOKEN, or the local master's file).
    """
    import httpx  # the master's extra: an agent-only install has no httpx

    from edgesched.master.token import read_token

    token = os.environ.get("EDGESCHED_API_TOKEN") or read_token(LOCAL_MASTER_DIR, "api") or ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    listed = [url.strip().rstrip("/") for url in master_url.split(",")]
    if not all(listed):
        raise click.UsageError(f"--master: an empty URL in {master_url!r}")
    to_try, asked, failures = list(listed), set(), []
    response = None
    # bounded: each listed URL once, and each leader a standby names once
    while to_try and response is None:
        url = to_try.pop(0)
        asked.add(url)
        try:
            answer = httpx.request(method, url + path, params=params, timeout=10, headers=headers)
        except httpx.HTTPError as exc:
            failures.append(f"cannot reach {url}: {exc}")
            continue
        if answer.status_code == 503:
            standby = from_json(answer.content)
            if standby.standby:
                leader = standby.leader.http() if standby.leader is not None else None
                scheme = urlsplit(url).scheme or "http"
                hinted = f"{scheme}://{leader}" if leader is not None else ""
                failures.append(f"{url}: a standby master (leader: {hinted or 'none yet'})")
                if hinted and hinted not in asked:
                    to_try.insert(0, hinted)
                continue
        response = answer
    if response is None:
        raise click.ClickException("; ".join(failures))
    if response.status_code >= 400:
        try:
            body = response.json()
            msg = body.get("msg") or body.get("detail") or body.get("error")
        except ValueError:
            msg = response.text
        raise click.ClickException(f"{response.status_code}: {msg}")
    return response.json()


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        from rich.console import Console

        Console().print(table)


@click.group()
def tasks() -> None:
    """List, inspect, retry and cancel tasks."""


@tasks.command("ls")
@click.option(
    "--state",
    type=click.Choice(["queued", "assigned", "running", "done", "dead", "cancelled"]),
)
@click.option("--limit", type=int, default=50, show_default=True)
@master_option
@json_option
def tasks_ls(state: str | None, limit: int, master_url: str, as_json: bool) -> None:
    """Tasks, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    from rich.table import Table

    data = call("GET", master_url, "/api/v1/tasks", **params)
    table = Table(title=f"tasks ({data['count']})")
    for column in ("id", "state", "type", "file", "device", "attempts", "error"):
        table.add_column(column)
    for t in data["tasks"]:
        table.add_row(
            t["id"],
            t["state"],
            t["task_type"],
            t["filename"],
            t["device_id"],
            str(t["attempts"]),
            t["error"][:60],
        )
    emit(data, as_json, table)


@tasks.command("show")
@click.argument("task_id")
@master_option
@json_option
def tasks_show(task_id: str, master_url: str, as_json: bool) -> None:
    """One task: state, attempts, device, stage timings, result, errors."""
    data = call("GET", master_url, f"/api/v1/tasks/{task_id}")
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    show_task(data)


@tasks.command("retry")
@click.argument("task_id")
@master_option
@json_option
def tasks_retry(task_id: str, master_url: str, as_json: bool) -> None:
    """Queue a dead task again; its attempt count is reset."""
    data = call("POST", master_url, f"/api/v1/tasks/{task_id}/retry")
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"task {task_id}: {data['msg']}")


@tasks.command("cancel")
@click.argument("task_id")
@master_option
@json_option
def tasks_cancel(task_id: str, master_url: str, as_json: bool) -> None:
    """Cancel a task that has not ended."""
    data = call("POST", master_url, f"/api/v1/tasks/{task_id}/cancel")
    click.echo(json.dumps(data) if as_json else f"task {task_id}: {data['state']}")


@click.group()
def devices() -> None:
    """List, drain and undrain devices."""


@devices.command("drain")
@click.argument("device_id")
@master_option
@json_option
def devices_drain(device_id: str, master_url: str, as_json: bool) -> None:
    """The device finishes what it runs and takes nothing new."""
    data = call("POST", master_url, f"/api/v1/devices/{device_id}/drain")
    click.echo(json.dumps(data) if as_json else f"device {device_id}: {data['state']}")


@devices.command("undrain")
@click.argument("device_id")
@master_option
@json_option
def devices_undrain(device_id: str, master_url: str, as_json: bool) -> None:
    """The device takes new tasks again."""
    data = call("POST", master_url, f"/api/v1/devices/{device_id}/undrain")
    click.echo(json.dumps(data) if as_json else f"device {device_id}: {data['state']}")


@click.command()
@master_option
@json_option
def status(master_url: str, as_json: bool) -> None:
    """The cluster at a glance: devices and tasks by state, queue depth."""
    summary = call("GET", master_url, "/api/v1/summary")
    listed = call("GET", master_url, "/api/v1/devices")["devices"]
    if as_json:
        click.echo(json.dumps({**summary, "device_list": listed}))
        return
    from rich.table import Table

    table = Table(title="devices")
    for column in ("id", "type", "state", "running", "done", "mean ms"):
        table.add_column(column)
    for d in listed:
        table.add_row(
            d["id"],
            d["type"],
            d["state"],
            f"{d['running']}/{d['slots']}",
            str(d["tasks_done"]),
            f"{d['mean_service_ms']:.1f}",
        )
    emit(listed, False, table)
    tasks = ", ".join(f"{k} {v}" for k, v in sorted(summary["tasks"].items())) or "none"
    click.echo(f"tasks: {tasks}; queue depth {summary['queue_depth']}")


@devices.command("ls")
@master_option
@json_option
def devices_ls(master_url: str, as_json: bool) -> None:
    """Devices with their state, load and slots."""
    from rich.table import Table

    data = call("GET", master_url, "/api/v1/devices")
    table = Table(title="devices")
    for column in ("id", "type", "state", "cpu", "mem", "xpu", "slots", "done", "mean ms"):
        table.add_column(column)
    for d in data["devices"]:
        kind = d["type"] + (" (emulated)" if d["emulated"] else "")
        xpu = "-" if d["xpu"] is None else f"{d['xpu']:.0%}"
        table.add_row(
            d["id"],
            kind,
            d["state"],
            f"{d['cpu']:.0%}",
            f"{d['memory']:.0%}",
            xpu,
            f"{d['slots'] - d['free_slots']}/{d['slots']}",
            str(d["tasks_done"]),
            f"{d['mean_service_ms']:.1f}",
        )
    emit(data, as_json, table)


@click.group()
def config() -> None:
    """Inspect the settings."""


@config.command("show")
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
def config_show(config_dir: str | None) -> None:
    """Print the effective settings (defaults → file → environment) as TOML."""
    click.echo(render_toml(settings_from(config_dir)), nl=False)


@click.group()
def journal() -> None:
    """The master's journal (edgesched.db): backups; see also `edgesched master --repair`."""


@journal.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--config", "config_dir", default=None, help=CONFIG_HELP)
@click.option("--data-dir", default=None, help="the master's data directory")
def journal_backup(dest: str, config_dir: str | None, data_dir: str | None) -> None:
    """Copy the journal to DEST, online (SQLite's backup API: the master may keep running)."""
    from edgesched.journal.backup import backup

    settings = settings_from(config_dir, master={"data_dir": data_dir})
    source = Path(settings.master.data_dir) / "edgesched.db"
    try:
        tasks = backup(source, Path(dest))
    except EdgeschedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backed up {source} to {dest}: {tasks} tasks, quick_check ok")


@click.group()
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

    settings = settings_from(config_dir, master={"data_dir": data_dir})
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

    settings = settings_from(config_dir, master={"data_dir": data_dir})
    value = write_token(settings.master.data_dir, _token_kind(api))
    click.echo(value)


def show_task(t: dict[str, Any]) -> None:
    """A task as an operator reads it: facts, its stages with durations, its errors."""
    from rich.console import Console
    from rich.table import Table

    from edgesched.stages import STAGES

    console = Console()
    facts = Table(show_header=False, title=f"task {t['id']}")
    facts.add_column(style="bold")
    facts.add_column()
    for key in ("state", "task_type", "filename", "device_id", "attempts", "client_id", "error"):
        if t.get(key) not in (None, ""):
            facts.add_row(key, str(t[key]))
    console.print(facts)
    timings = t.get("timings") or {}
    stages = Table(title="stages (ms)")
    for stage in STAGES:
        stages.add_column(stage, justify="right")
    stages.add_row(*(f"{float(timings.get(f'{s}_ms', 0.0)):.1f}" for s in STAGES))
    console.print(stages)
    board = timings.get("board") or {}
    if board:
        console.print(
            "on the board: " + ", ".join(f"{k} {float(v):.1f}" for k, v in sorted(board.items()))
        )
    errors = t.get("errors") or []
    if errors:
        table = Table(title="errors, oldest first")
        for column in ("attempt", "device", "kind", "message"):
            table.add_column(column)
        for e in errors:
            table.add_row(
                str(e.get("attempt", "")),
                str(e.get("device_id", "")),
                str(e.get("kind", "")),
                str(e.get("message", "")),
            )
        console.print(table)
