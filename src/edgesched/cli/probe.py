"""``edgesched probe``: what this machine (or a fake root) would report, and which probe said so."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from edgesched.agent.probes import METRIC_FIELDS, ProbeCollector, ProbeEnv, build_chain


def collect_report(sysroot: str | None, wait_s: float) -> dict[str, Any]:
    """Runs the chain once through the collector (so timeouts apply as on the agent)."""
    env = ProbeEnv(sysroot)
    probes = build_chain(env)
    collector = ProbeCollector(probes, timeout_s=wait_s)
    try:
        collector.start()
        collector.wait_ready(wait_s)
        sample, sources = collector.latest()
        states = collector.states()
        details: dict[str, Any] = {}
        for probe in probes:
            try:
                info = probe.static_info()
            except Exception as exc:  # a report with a hole beats no report
                info = {"error": str(exc)}
            details[probe.name] = {"static_info": info, "state": asdict(states[probe.name])}
    finally:
        collector.close(wait_s=0.2)
        env.close()  # kills a call still hanging past the wait; its thread then ends
    metrics = sample.to_dict()
    return {
        "sysroot": str(env.sysroot) if env.sysroot else None,
        "chain": [p.name for p in probes],
        "metrics": {name: metrics[name] for name in METRIC_FIELDS},
        "sources": sources,
        "probes": details,
    }


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def render_text(report: dict[str, Any]) -> str:
    lines = [f"probe chain: {', '.join(report['chain'])}"]
    if report["sysroot"]:
        lines.append(f"sysroot: {report['sysroot']}")
    lines.append("")
    lines.append(f"{'metric':<18}{'value':<22}probe")
    for name, value in report["metrics"].items():
        lines.append(f"{name:<18}{_show(value):<22}{report['sources'].get(name, '-')}")
    lines.append("")
    for name, detail in report["probes"].items():
        state = detail["state"]
        status = f"degraded: {state['reason']}" if state["degraded"] else "ok"
        if not state["degraded"] and state["ok"] == 0:
            status = "no reading yet"
        soc = detail["static_info"].get("soc")
        lines.append(f"{name}: {status}" + (f" (soc {soc})" if soc else ""))
    return "\n".join(lines)


@click.command("probe")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option(
    "--sysroot",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="a fake root (sys/, proc/, etc/, bin/ with fake npu-smi / tegrastats) to probe instead",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0.1),
    default=12.0,
    show_default=True,
    help="seconds to wait for the slowest probe (npu-smi takes seconds)",
)
def probe_command(as_json: bool, sysroot: str | None, wait_s: float) -> None:
    """Print what this machine would report and which probe produced each metric."""
    report = collect_report(sysroot, wait_s)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=False))
    else:
        click.echo(render_text(report))
