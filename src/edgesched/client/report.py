"""The client's end-of-run summary, as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgesched.client.send import SendReport
from edgesched.v1 import common_pb2


def print_report(report: SendReport, console: Console | None = None) -> None:
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
    stages = ("queue_wait_ms", "transfer_ms", "inference_ms", "result_return_ms", "end_to_end_ms")
    done = [
        o.result
        for o in report.outcomes
        if o.result and o.result.state == common_pb2.TASK_STATE_DONE
    ]
    if done:
        breakdown = Table(title="mean stage durations (ms)")
        for stage in stages:
            breakdown.add_column(stage.removesuffix("_ms"), justify="right")
        breakdown.add_row(
            *(f"{sum(getattr(r.timings, st) for r in done) / len(done):.1f}" for st in stages)
        )
        console.print(breakdown)
    for outcome in report.outcomes:
        if outcome.refused:
            console.print(f"[red]refused[/red] {outcome.path.name}: {outcome.refused}")
        elif outcome.result and outcome.result.state != common_pb2.TASK_STATE_DONE:
            console.print(f"[red]failed[/red] {outcome.path.name}: {outcome.result.error}")
