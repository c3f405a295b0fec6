"""What the process benchmarks measure of a process and of a directory: RSS and CPU by pid,
idle usage, files and bytes on disk, and the growth of a figure per unit of work."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import psutil

from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.tools.testing.process_cluster import LocalCluster

MB = 1_000_000  #: the gates speak of MB: 10^6 bytes (a MiB is 1,048,576)


def pid_of(cluster: LocalCluster, name: str) -> int:
    proc = cluster.procs.get(name)
    if proc is None or proc.poll() is not None:
        raise BenchError(f"{name} is not running (see {cluster.root / 'logs' / (name + '.log')})")
    return proc.pid


def rss_bytes(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error as exc:
        raise BenchError(f"cannot read the memory of process {pid}: {exc}") from exc


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error as exc:
        raise BenchError(f"cannot read the CPU time of process {pid}: {exc}") from exc
    return float(times.user + times.system)


def idle_usage(pids: dict[str, int], seconds: float, deadline: Deadline) -> dict[str, Any]:
    """CPU (percent of one core) and RSS of each process over ``seconds`` of doing nothing."""
    seconds = deadline.cap(seconds, "measuring idle processes")
    start_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    out: dict[str, Any] = {"seconds": round(wall, 3)}
    for name, pid in pids.items():
        used = cpu_seconds(pid) - start_cpu[name]
        rss = rss_bytes(pid)
        out[name] = {
            "cpu_percent_of_core": round(100.0 * used / wall, 3),
            "cpu_seconds": round(used, 4),
            "rss_bytes": rss,
            "rss_mb": round(rss / MB, 2),
        }
    return out


def dir_stats(path: Path) -> dict[str, int]:
    """Files and bytes under ``path`` (what a run leaves on disk)."""
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(root) / name).stat().st_size
                files += 1
    return {"files": files, "bytes": size}


def slope_per(samples: list[tuple[int, int]], per: int) -> float:
    """Least-squares slope of (count, bytes) samples, in bytes per ``per`` counts."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(x for x, _ in samples) / n
    my = sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in samples)
    return sxy / sxx * per
