"""Measuring the master while the fleet runs: the worker processes' handles, samples of the
master process (CPU, threads, socket bytes), its metrics page, and an optional py-spy profile."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from edgesched.tools.bench.scale.fleet import WorkerConfig

# ---- the bench (parent process) ------------------------------------------------------------


class Worker:
    """A worker process; its JSON lines arrive on a queue."""

    def __init__(self, config: WorkerConfig, log_path: Path) -> None:
        self.config = config
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgesched.tools.bench.scale",
                    "--worker",
                    json.dumps(asdict(config)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C reaches the bench, which stops it in order
            )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()

    def expect(self, kind: str, deadline: float) -> dict[str, Any]:
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"worker {self.config.worker}: no {kind!r} in time") from None
            if event is None:
                code = self.proc.wait()
                raise RuntimeError(f"worker {self.config.worker} exited ({code}); see its log")
            if event.get("type") == kind:
                return event

    def stop(self) -> None:
        """Closing its stdin tells the worker to leave (goodbyes); then SIGTERM, then SIGKILL."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


@dataclass
class _Sample:
    at: float
    cpu_s: float
    threads: dict[str, float]
    sockets: tuple[int, int] | None  #: (bytes the master received, bytes it sent) on the link


def _thread_times(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (gRPC's threads, the event loop, executors)."""
    import psutil

    out: dict[str, float] = {}
    for thread in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        out[name] = out.get(name, 0.0) + thread.user_time + thread.system_time
    return out


_SS_BYTES = re.compile(r"\bbytes_(sent|acked|received):(\d+)")


def _socket_bytes(port: int) -> tuple[int, int] | None:
    """(received, sent) bytes summed over the master's established sockets on ``port``."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    try:
        out = subprocess.run(
            [ss, "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    received = sent = acked = 0
    found = False
    for kind, value in _SS_BYTES.findall(out):
        found = True
        if kind == "received":
            received += int(value)
        elif kind == "sent":
            sent += int(value)
        else:
            acked += int(value)
    return (received, sent or acked) if found else None


def scrape(http_url: str) -> dict[float, float]:
    """The heartbeat-handling histogram's cumulative buckets (upper bound → count)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{http_url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "edgesched_heartbeat_handling_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def online_devices(http_url: str, api_token: str) -> int:
    import httpx

    response = httpx.get(
        f"{http_url}/api/v1/devices",
        headers={"authorization": f"Bearer {api_token}"},
        timeout=30,
    )
    response.raise_for_status()
    return sum(1 for d in response.json()["devices"] if d["state"] == "online")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """A SIGTERM stops the bench like a Ctrl-C: everything it started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sample(master: Any, port: int, full: bool = True) -> _Sample:
    times = master.cpu_times()
    return _Sample(
        at=time.monotonic(),
        cpu_s=times.user + times.system,
        threads=_thread_times(master.pid) if full else {},
        sockets=_socket_bytes(port) if full else None,
    )


def start_py_spy(pid: int, out: Path, seconds: float, root: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    with open(root / "py-spy.log", "ab") as log_file:
        return subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(out),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
