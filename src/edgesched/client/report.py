"""The client's end-of-run summary, as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgesched.client.send import SendReport
from edgesched.stages import STAGES
from edgesched.v1 import common_pb2

#: up to this many tasks, the per-task stage table is printed without --per-task
PER_TASK_ROWS = 20


def print_report(
    report: SendReport, console: Console | None = None, per_task: bool = False
) -> None:
    console = console or Console()
    s = report.summary()
    latency = s["latency_ms"]
    assert isinstance(latency, dict)
    console.print(
        f"sent {s['sent']}, done {s['done']}, failed {s['failed']} in {s['seconds']} s: "
        f"{s['throughput_per_s']} tasks/s, latency p50 {latency['p50']} ms, "
        f"p95 {latency['p95']} ms"
    )
    table = Table(title="tasks per device")
    table.add_column("device")
    table.add_column("tasks", justify="right")
    for device, count in report.by_device.items():
        table.add_row(device, str(count))
    console.print(table)
    summary = report.stage_summary()
    if summary:
        breakdown = Table(title="stage durations over done tasks (ms)")
        breakdown.add_column("")
        for stage in STAGES:
            breakdown.add_column(stage, justify="right")
        for figure in ("mean", "p50", "p95"):
            breakdown.add_row(figure, *(f"{summary[st][figure]:.1f}" for st in STAGES))
        console.print(breakdown)
    rows = [report.stages_of(o) for o in report.outcomes if o.result is not None]
    if rows and (per_task or len(rows) <= PER_TASK_ROWS):
        per = Table(title="stages per task (ms)")
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
        elif outcome.result and outcome.result.state != common_pb2.TASK_STATE_DONE:
            console.print(f"[red]failed[/red] {outcome.path.name}: {outcome.result.error}")
