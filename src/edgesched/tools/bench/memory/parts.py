"""The parts of ``edgesched bench memory``, each on its own cluster of real processes: the agent
over real inferences, the master over many tasks, and both at idle (see the package's
docstring for the gates)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.tools.bench.gateway import http, wait_devices
from edgesched.tools.bench.load import LoadClient
from edgesched.tools.bench.output import progress
from edgesched.tools.bench.payloads import noop_available, page_pictures, small_jpeg
from edgesched.tools.bench.sampling import (
    MB,
    cpu_seconds,
    dir_stats,
    idle_usage,
    pid_of,
    rss_bytes,
    slope_per,
)
from edgesched.tools.testing.lifecycle import local_cluster
from edgesched.tools.testing.process_cluster import LocalCluster

PARTS = ("agent", "master", "idle")


AGENT_GATE_BYTES = 5 * MB


MASTER_GATE_FRACTION = 0.10


def _checkpoints(total: int, first: int, every: int) -> list[int]:
    points = {min(first, total), total}
    if every > 0:
        points.update(range(every, total + 1, every))
    return sorted(p for p in points if p >= 1)


def _load(client: LoadClient) -> dict[str, Any]:
    stats = asyncio.run(client.run())
    if stats.accepted == 0:
        raise BenchError(f"the master accepted no task: {stats.first_refusal}")
    return stats.as_dict()


def run_agent_part(
    out: dict[str, Any],
    root: Path,
    deadline: Deadline,
    inferences: int,
    baseline_at: int,
    every: int,
    pictures: int,
    page_width: int,
    window: int,
    idle_s: float,
    settle_s: float,
    with_idle: bool,
) -> None:
    """The real onnx agent: idle first (when asked; ``out["idle"]``), then ``inferences`` real
    inferences (``out["agent"]``)."""
    images = page_pictures(pictures, page_width)
    with local_cluster(root) as cluster:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"))
        cluster.start_agent("agent", ["--backend", "onnx", "--device-type", "cpu"])
        wait_devices(cluster, 1, deadline)
        pids = {"agent": pid_of(cluster, "agent"), "master": pid_of(cluster, "master")}
        if with_idle:
            time.sleep(deadline.cap(settle_s, "letting the agent settle"))
            out["idle"] = {"agent_backend": "onnx", **idle_usage(pids, idle_s, deadline)}
            progress(f"idle: {out['idle']}")
        if inferences <= 0:
            return
        points = set(_checkpoints(inferences, baseline_at, every))
        samples: list[dict[str, Any]] = []
        rss_before = rss_bytes(pids["agent"])
        started = time.monotonic()

        def on_finished(count: int) -> None:
            if count in points:
                samples.append(
                    {
                        "inferences": count,
                        "agent_rss_bytes": rss_bytes(pids["agent"]),
                        "master_rss_bytes": rss_bytes(pids["master"]),
                        "elapsed_s": round(time.monotonic() - started, 2),
                    }
                )
                progress(f"agent: {samples[-1]}")

        client = LoadClient(
            cluster.grpc_target,
            cluster.api_token,
            "layout",
            lambda i: (f"page-{i % len(images)}.jpg", images[i % len(images)]),
            inferences,
            deadline,
            window=window,
            streams=1,
            stall_s=120.0,
            on_finished=on_finished,
        )
        load = _load(client)
        base_at = min(baseline_at, inferences)
        base = next(s for s in samples if s["inferences"] == base_at)
        end = samples[-1]
        growth = end["agent_rss_bytes"] - base["agent_rss_bytes"]
        after = [(s["inferences"], s["agent_rss_bytes"]) for s in samples if s is not base]
        trend = [(base_at, base["agent_rss_bytes"]), *after]
        out["agent"] = {
            "backend": "onnx",
            "inferences": inferences,
            "pictures": len(images),
            "picture_bytes_mean": round(sum(map(len, images)) / len(images)),
            "page_width": page_width,
            "baseline_at": base_at,
            "rss_before_first_bytes": rss_before,
            "rss_baseline_bytes": base["agent_rss_bytes"],
            "rss_end_bytes": end["agent_rss_bytes"],
            "rss_max_bytes": max(s["agent_rss_bytes"] for s in samples),
            "growth_bytes": growth,
            "growth_mb": round(growth / MB, 3),
            "slope_bytes_per_1000": round(slope_per(trend, 1000), 1),
            "ms_per_inference": round(1000 * load["seconds"] / max(1, load["finished"]), 2),
            "samples": samples,
            "load": load,
            "gate": {
                "limit_mb": AGENT_GATE_BYTES / MB,
                "passed": growth <= AGENT_GATE_BYTES and load["done"] == inferences,
            },
        }


def run_master_part(
    root: Path,
    deadline: Deadline,
    tasks: int,
    sample_at: int,
    every: int,
    agents: int,
    slots: int,
    window: int,
    streams: int,
    payload_bytes: int,
    backend: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``tasks`` tasks through one master with fast agents; the master's RSS along the way.
    ``env`` goes to the master only (``EDGESCHED_SCHEDULING_…`` settings)."""
    if backend == "auto":
        backend = "noop" if noop_available() else "sleep"
    if backend == "noop":
        task_type, payload, name = "echo", os.urandom(payload_bytes), "blob.bin"
    else:  # the sleep backend decodes what it gets: a small real picture, the layout type
        task_type, payload, name = "layout", small_jpeg(), "small.jpg"
    with local_cluster(root) as cluster:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"), env=env)
        for n in range(1, agents + 1):
            cluster.start_agent(
                f"agent-{n}", ["--backend", backend, "--device-type", "cpu", "--slots", str(slots)]
            )
        wait_devices(cluster, agents, deadline)
        master_pid = pid_of(cluster, "master")
        points = set(_checkpoints(tasks, sample_at, every))
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        cpu0 = cpu_seconds(master_pid)
        rss_start = rss_bytes(master_pid)

        def on_finished(count: int) -> None:
            if count in points:
                samples.append(
                    {
                        "tasks": count,
                        "master_rss_bytes": rss_bytes(master_pid),
                        "elapsed_s": round(time.monotonic() - started, 2),
                    }
                )
                progress(f"master: {samples[-1]}")

        client = LoadClient(
            cluster.grpc_target,
            cluster.api_token,
            task_type,
            lambda i: (name, payload),
            tasks,
            deadline,
            window=window,
            streams=streams,
            stall_s=60.0,
            on_finished=on_finished,
        )
        load = _load(client)
        cpu_used = cpu_seconds(master_pid) - cpu0
        at = min(sample_at, tasks)
        ref = next(s for s in samples if s["tasks"] == at)
        end = samples[-1]
        change = (end["master_rss_bytes"] - ref["master_rss_bytes"]) / ref["master_rss_bytes"]
        health = http(cluster, "GET", "/healthz")
        summary = http(cluster, "GET", "/api/v1/summary")
        after = [(s["tasks"], s["master_rss_bytes"]) for s in samples if s["tasks"] >= at]
        return {
            "backend": backend,
            "master_env": env or {},
            "task_type": task_type,
            "payload_bytes": len(payload),
            "tasks": tasks,
            "agents": agents,
            "slots_per_agent": slots,
            "window": window,
            "streams": streams,
            "sample_at": at,
            "rss_start_bytes": rss_start,
            "rss_at_sample_bytes": ref["master_rss_bytes"],
            "rss_end_bytes": end["master_rss_bytes"],
            "change_fraction": round(change, 4),
            "slope_bytes_per_10000": round(slope_per(after, 10_000), 1),
            "master_cpu_us_per_task": round(1e6 * cpu_used / max(1, load["finished"]), 1),
            "samples": samples,
            "load": load,
            "tasks_pending_after": health.get("tasks_pending"),
            "journal_counts_after": summary.get("tasks"),
            "journal_bytes": _journal_bytes(cluster),
            "upload_left": dir_stats(cluster.master_dir / "upload"),
            "gate": {
                "limit_fraction": MASTER_GATE_FRACTION,
                "passed": abs(change) <= MASTER_GATE_FRACTION and load["done"] == tasks,
            },
        }


def _journal_bytes(cluster: LocalCluster) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = cluster.master_dir / f"edgesched.db{suffix}"
        if path.exists():
            total += path.stat().st_size
    return total
