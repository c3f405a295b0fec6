"""``edgesched demo``: a master and three emulated boards on loopback, real model, scored."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgesched.boards import BOARD_FAMILIES
from edgesched.client.files import list_pictures
from edgesched.client.send import Sender, SendReport, TlsFiles, write_labels
from edgesched.inference.labels import Detection
from edgesched.kinds import TaskState
from edgesched.stats import percentile
from edgesched.tools.demo.pages import write_pages
from edgesched.tools.demo.scoring import score
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.wire import tasks

PROFILES = BOARD_FAMILIES


@dataclass
class DemoOptions:
    tasks: int = 60
    strategy: str = "load"
    keep: bool = False
    as_json: bool = False
    time_scale: float = 60.0
    workspace: Path = Path("workspace")
    seed: int = 0
    tls: bool = False


def run_demo(options: DemoOptions) -> int:
    console = Console(stderr=options.as_json)
    req_dir = options.workspace / "client" / "data" / "req"
    rst_dir = options.workspace / "client" / "data" / "rst"
    root = options.workspace / "demo"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(req_dir, ignore_errors=True)
    console.print(f"generating {options.tasks} document pages into {req_dir} …")
    truth = write_pages(req_dir, options.tasks, seed=options.seed)
    cluster = LocalCluster(root=root, strategy=options.strategy)
    tls = None
    if options.tls:
        from edgesched.certs import init_certs

        certs = init_certs(root / "certs", agents=len(PROFILES))
        cluster.tls_dir = certs.directory
        tls = TlsFiles(str(certs.ca_cert), str(certs.master_cert), str(certs.master_key))
    # SIGTERM (a supervisor, `timeout`) must stop the cluster too, not orphan its processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start_master()
        for profile in PROFILES:
            cluster.start_agent(
                f"agent-{profile}",
                ["--emulate", profile, "--time-scale", str(options.time_scale)],
            )
        cluster.wait_for_devices(len(PROFILES))
        console.print(
            f"cluster up: master gRPC {cluster.grpc_target}, HTTP {cluster.http_url}; "
            f"{len(PROFILES)} emulated boards; strategy {options.strategy}"
        )
        report = asyncio.run(
            Sender(
                cluster.grpc_target,
                "layout",
                "demo",
                workers=8,
                api_token=cluster.api_token,
                tls=tls,
            ).run(list_pictures(req_dir))
        )
        write_labels(report, rst_dir)
        devices = {d["id"]: d for d in cluster.devices()}
        summary = _summary(report, truth, devices)
        if options.as_json:
            print(json.dumps(summary))
        else:
            _print(console, summary, report)
        if options.keep:
            console.print(
                f"cluster left running: gateway {cluster.http_url} "
                f"(devices: {cluster.http_url}/api/v1/devices, API docs: {cluster.http_url}/docs),"
                f" gRPC {cluster.grpc_target}. Ctrl-C stops it."
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if summary["done"] == options.tasks else 1
    finally:
        cluster.stop()


def _summary(
    report: SendReport, truth: dict[str, Any], devices: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    found: dict[str, list[Detection]] = {}
    for outcome in report.outcomes:
        if outcome.result and tasks.state_of(outcome.result) is TaskState.DONE:
            found[outcome.path.name] = tasks.detections_of(outcome.result)
    latencies = sorted(report.latencies_ms())
    per_device = {}
    for device_id, count in sorted(report.by_device.items()):
        info = devices.get(device_id, {})
        per_device[device_id] = {
            "type": info.get("type", "?"),
            "emulated": info.get("emulated", False),
            "tasks": count,
            "mean_service_ms": info.get("mean_service_ms", 0.0),
        }
    return {
        "tasks": report.sent,
        "done": report.done,
        "failed": report.failed,
        "correct": round(score(truth, found), 4),
        "devices": per_device,
        "throughput_per_s": round(report.done / report.seconds, 3) if report.seconds else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 3) if latencies else 0.0,
            "p95": round(percentile(latencies, 95), 3) if latencies else 0.0,
        },
    }


def _print(console: Console, summary: dict[str, Any], report: SendReport) -> None:
    table = Table(title="edgesched demo: tasks per device")
    for column in ("device", "type", "tasks", "mean service ms"):
        table.add_column(column, justify="right" if column != "device" else "left")
    for device_id, info in summary["devices"].items():
        kind = info["type"] + (" (emulated)" if info["emulated"] else "")
        table.add_row(device_id, kind, str(info["tasks"]), f"{info['mean_service_ms']:.1f}")
    console.print(table)
    lat = summary["latency_ms"]
    console.print(
        f"{summary['done']} of {summary['tasks']} tasks done, {summary['failed']} failed; "
        f"{summary['correct']:.1%} of drawn regions found (IoU ≥ 0.5); "
        f"{summary['throughput_per_s']} tasks/s; latency p50 {lat['p50']} ms, p95 {lat['p95']} ms"
    )
