"""The client's end-of-run summary, as tables: rich's where it is installed (the master's
extra), plain aligned text on a board's base install."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import click

from edgesched.client.send import SendReport
from edgesched.kinds import TaskState
from edgesched.stages import STAGES
from edgesched.wire import tasks

#: up to this many tasks, the per-task stage table is printed without --per-task
PER_TASK_ROWS = 20


class _PlainTable:
    """The part of rich's ``Table`` this report uses, printed as aligned text."""

    def __init__(self, title: str = "") -> None:
        self.title = title
        self.columns: list[tuple[str, bool]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, header: str = "", justify: str = "left") -> None:
        self.columns.append((header, justify == "right"))

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def render(self) -> str:
        table = [tuple(header for header, _ in self.columns), *self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.columns))]
        out = [self.title] if self.title else []
        for row in table:
            cells = (
                row[i].rjust(widths[i]) if right else row[i].ljust(widths[i])
                for i, (_, right) in enumerate(self.columns)
            )
            out.append("  ".join(cells).rstrip())
        return "\n".join(out)


class _PlainConsole:
    """The part of rich's ``Console`` this report uses; markup such as ``[red]`` is dropped."""

    def print(self, item: Any) -> None:
        if isinstance(item, _PlainTable):
            click.echo(item.render())
        else:
            click.echo(re.sub(r"\[/?[a-z ]+\]", "", str(item)))


def print_report(report: SendReport, console: Any = None, per_task: bool = False) -> None:
    table_class: Any = _PlainTable
    if importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.table import Table

        console, table_class = console or Console(), Table
    console = console or _PlainConsole()
    s = report.summary()
    latency = s["latency_ms"]
    assert isinstance(latency, dict)
    console.print(
        f"sent {s['sent']}, done {s['done']}, failed {s['failed']} in {s['seconds']} s: "
        f"{s['throughput_per_s']} tasks/s, latency p50 {latency['p50']} ms, "
        f"p95 {latency['p95']} ms"
    )
    table = table_class(title="tasks per device")
    table.add_column("device")
    table.add_column("tasks", justify="right")
    for device, count in report.by_device.items():
        table.add_row(device, str(count))
    console.print(table)
    summary = report.stage_summary()
    if summary:
        breakdown = table_class(title="stage durations over done tasks (ms)")
        breakdown.add_column("")
        for stage in STAGES:
            breakdown.add_column(stage, justify="right")
        for figure in ("mean", "p50", "p95"):
            breakdown.add_row(figure, *(f"{summary[st][figure]:.1f}" for st in STAGES))
        console.print(breakdown)
    rows = [report.stages_of(o) for o in report.outcomes if o.result is not None]
    if rows and (per_task or len(rows) <= PER_TASK_ROWS):
        per = table_class(title="stages per task (ms)")
        for column in ("file", "device", "state"):
            per.add_column(column)
        for stage in STAGES:
            per.add_column(stage, justify="right")
        for row in rows:
            per.add_row(
                str(row["file"]),
                str(row["device"]),
                str(row["state"]),
                *(f"{row[st]:.1f}" for st in STAGES),
            )
        console.print(per)
    elif rows:
        console.print(f"(stages of each of the {len(rows)} tasks: --per-task, or --json)")
    for outcome in report.outcomes:
        if outcome.refused:
            console.print(f"[red]refused[/red] {outcome.path.name}: {outcome.refused}")
        elif outcome.result and tasks.state_of(outcome.result) is not TaskState.DONE:
            console.print(f"[red]failed[/red] {outcome.path.name}: {outcome.result.error}")
