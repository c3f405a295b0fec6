"""What the process benchmarks share: a global deadline, a cluster that is always cleaned up,
process sampling (RSS, CPU) by pid, and a streaming load client with a bounded window.

The load client submits over ``SubmitStream`` (several streams at once, so the journal's group
commit has something to group) and learns about finished tasks from one ``WatchResults`` stream
for its client id. That stream only carries tasks that end after it is registered on the master,
so the client first sends probe tasks until one comes back through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import grpc
import httpx
import psutil

from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2

MB = 1_000_000  #: the gates speak of MB: 10^6 bytes (a MiB is 1,048,576)
FINAL_STATES = ("done", "dead", "cancelled")
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class BenchError(Exception):
    """The benchmark could not produce its figures (a timeout, a process that died, …)."""


# ---- time ----------------------------------------------------------------------------------


@dataclass
class Deadline:
    """One deadline for a whole benchmark: every wait is capped by what is left of it."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def cap(self, timeout: float, what: str) -> float:
        """``timeout`` or what is left, whichever is less; raises when nothing is left."""
        left = self.left()
        if left <= 0:
            raise BenchError(f"the benchmark's deadline passed while {what}")
        return min(timeout, left)

    def check(self, what: str) -> None:
        self.cap(1.0, what)


# ---- processes -----------------------------------------------------------------------------


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


def wait_devices(
    cluster: LocalCluster, count: int, deadline: Deadline, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Waits for ``count`` online devices (an onnx agent loads its model before it joins)."""
    return cluster.wait_for_devices(count, deadline.cap(timeout, f"waiting for {count} devices"))


def gateway(cluster: LocalCluster, timeout: float = 10.0) -> httpx.Client:
    """A client of the cluster's gateway, with its API token (one connection, kept open)."""
    return httpx.Client(
        base_url=cluster.http_url,
        headers={"authorization": f"Bearer {cluster.api_token}"},
        timeout=timeout,
        verify=cluster.http_verify(),
    )


def http(client: httpx.Client | LocalCluster, method: str, path: str) -> Any:
    """A call to the gateway (a client from ``gateway``, or a cluster: a fresh connection);
    the JSON answer."""
    if isinstance(client, LocalCluster):
        with gateway(client) as fresh:
            return http(fresh, method, path)
    response = client.request(method, path)
    response.raise_for_status()
    return response.json()


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


def progress(line: str) -> None:
    """A line on stderr as a long run goes (stdout keeps the one JSON object)."""
    import click

    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)


def emit(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str]) -> None:
    import click

    click.echo(json.dumps(result) if as_json else summary(result))


# ---- load ----------------------------------------------------------------------------------


PayloadFn = Callable[[int], tuple[str, bytes]]  #: index → (file name, bytes)


@dataclass
class LoadStats:
    total: int
    submitted: int = 0
    accepted: int = 0
    refused: int = 0
    done: int = 0
    failed: int = 0  #: ended dead or cancelled
    probes: int = 0  #: tasks sent to prove the result stream was registered
    seconds: float = 0.0
    first_refusal: str = ""
    first_failure: str = ""
    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["finished"] = self.finished
        out["throughput_per_s"] = round(self.finished / self.seconds, 2) if self.seconds else 0.0
        out["seconds"] = round(self.seconds, 3)
        return out


class LoadClient:
    """Submits ``total`` tasks with at most ``window`` unfinished at a time and follows each to
    its end. ``on_finished(count)`` runs (on the event loop) after every finished task."""

    def __init__(
        self,
        target: str,
        api_token: str,
        task_type: str,
        payload: PayloadFn,
        total: int,
        deadline: Deadline,
        window: int = 64,
        streams: int = 4,
        stall_s: float = 60.0,
        on_finished: Callable[[int], None] | None = None,
        client_id: str = "",
    ) -> None:
        self.target = target
        self.metadata = (("authorization", f"Bearer {api_token}"),) if api_token else ()
        self.task_type = task_type
        self.payload = payload
        self.deadline = deadline
        self.window_size = max(1, window)
        self.streams = max(1, streams)
        self.stall_s = stall_s
        self.on_finished = on_finished
        self.client_id = client_id or f"bench-{uuid.uuid4().hex[:12]}"
        self.stats = LoadStats(total=total)
        self._next = 0
        self._window = asyncio.Semaphore(self.window_size)
        self._pending: set[str] = set()
        self._early: dict[str, common_pb2.TaskResult] = {}  #: ended before its reply was read
        self._probes: set[str] = set()
        self._probe_seen = asyncio.Event()
        self._progress = asyncio.Event()

    async def run(self) -> LoadStats:
        """Runs the load; ``stats.seconds`` counts from the first submission (not the probes)."""
        try:
            await asyncio.wait_for(self._run(), self.deadline.cap(1e9, "running the load"))
        except TimeoutError:
            raise BenchError(
                f"the benchmark's deadline passed with {self.stats.finished} of "
                f"{self.stats.total} tasks finished"
            ) from None
        return self.stats

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target, options=GRPC_OPTIONS) as channel:
            stub = client_pb2_grpc.TaskServiceStub(channel)
            watch = stub.WatchResults(
                client_pb2.WatchRequest(client_id=self.client_id), metadata=self.metadata
            )
            reader = asyncio.create_task(self._read(watch))
            try:
                await self._confirm_watch(stub, reader)
                started = time.monotonic()
                senders = [asyncio.create_task(self._stream(stub)) for _ in range(self.streams)]
                try:
                    await asyncio.gather(*senders)
                    await self._wait_all(stub, reader)
                finally:
                    self.stats.seconds = time.monotonic() - started
                    for sender in senders:
                        sender.cancel()
                    await asyncio.gather(*senders, return_exceptions=True)
            finally:
                watch.cancel()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, watch: Any) -> None:
        async for result in watch:
            self._on_result(result)

    def _on_result(self, result: common_pb2.TaskResult) -> None:
        task_id = result.task_id
        if task_id in self._pending:
            self._pending.discard(task_id)
            self._count(result)
        elif task_id in self._probes:
            self._probe_seen.set()
        else:
            self._early[task_id] = result

    def _count(self, result: common_pb2.TaskResult) -> None:
        if result.state == common_pb2.TASK_STATE_DONE:
            self.stats.done += 1
            device = result.device_id
            self.stats.by_device[device] = self.stats.by_device.get(device, 0) + 1
        else:
            self.stats.failed += 1
            if not self.stats.first_failure:
                state = common_pb2.TaskState.Name(result.state)
                self.stats.first_failure = f"{result.task_id} {state}: {result.error}"
        self._window.release()
        self._progress.set()
        if self.on_finished is not None:
            self.on_finished(self.stats.finished)

    def _request(self, index: int, key: str) -> client_pb2.SubmitRequest:
        filename, data = self.payload(index)
        return client_pb2.SubmitRequest(
            client_id=self.client_id,
            idempotency_key=key,
            task_type=self.task_type,
            filename=filename,
            payload=data,
        )

    async def _confirm_watch(self, stub: Any, reader: asyncio.Task[None]) -> None:
        """Probe tasks until one comes back through the result stream: from then on it is
        registered, and no result of the real load can slip past it."""
        for attempt in range(1, 1000):
            key = f"probe-{attempt}"
            reply = await stub.Submit(
                self._request(0, key),
                metadata=self.metadata,
                timeout=self.deadline.cap(60, "submitting a probe task"),
            )
            self._probes.add(reply.task_id)
            self.stats.probes += 1
            waited_until = time.monotonic() + 120.0
            while time.monotonic() < waited_until:
                if reader.done():
                    reader.result()  # raises what ended the stream
                    raise BenchError("the result stream ended before any result")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._probe_seen.wait(), self.deadline.cap(1.0, "waiting for a probe")
                    )
                if self._probe_seen.is_set():
                    return
                task = await stub.GetTask(
                    client_pb2.GetTaskRequest(task_id=reply.task_id),
                    metadata=self.metadata,
                    timeout=self.deadline.cap(30, "asking for a probe task"),
                )
                if task.state in (
                    common_pb2.TASK_STATE_DONE,
                    common_pb2.TASK_STATE_DEAD,
                    common_pb2.TASK_STATE_CANCELLED,
                ):
                    if task.state != common_pb2.TASK_STATE_DONE:
                        raise BenchError(f"the probe task ended {task.error or task.state}")
                    break  # it ended before the stream was registered: another probe
            else:
                raise BenchError("no probe task finished within 120 s: is a device online?")
        raise BenchError("the result stream never carried a probe task")

    async def _stream(self, stub: Any) -> None:
        async def requests() -> Any:
            while True:
                await self._window.acquire()
                if self._next >= self.stats.total:
                    self._window.release()
                    return
                index = self._next
                self._next += 1
                self.stats.submitted += 1
                yield self._request(index, f"t-{index}")

        call = stub.SubmitStream(requests(), metadata=self.metadata)
        async for reply in call:
            if reply.error_code:
                self.stats.refused += 1
                if not self.stats.first_refusal:
                    self.stats.first_refusal = f"{reply.error_code}: {reply.error}"
                self._window.release()
                self._progress.set()
                continue
            self.stats.accepted += 1
            early = self._early.pop(reply.task_id, None)
            if early is not None:
                self._count(early)
            else:
                self._pending.add(reply.task_id)

    async def _wait_all(self, stub: Any, reader: asyncio.Task[None]) -> None:
        """Every accepted task finished; stalls are checked against GetTask, then give up."""
        last = time.monotonic()
        seen = self.stats.finished
        while self._pending:
            if reader.done():
                reader.result()
                raise BenchError("the result stream ended early")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._progress.wait(), self.deadline.cap(1.0, "waiting for results")
                )
            if self.stats.finished != seen:
                seen, last = self.stats.finished, time.monotonic()
                continue
            if time.monotonic() - last < self.stall_s:
                continue
            for task_id in sorted(self._pending)[:1000]:  # the stream missed it? ask
                result = await stub.GetTask(
                    client_pb2.GetTaskRequest(task_id=task_id),
                    metadata=self.metadata,
                    timeout=self.deadline.cap(30, "asking for stalled tasks"),
                )
                if result.state in (
                    common_pb2.TASK_STATE_DONE,
                    common_pb2.TASK_STATE_DEAD,
                    common_pb2.TASK_STATE_CANCELLED,
                ):
                    self._on_result(result)
            if self.stats.finished == seen:
                raise BenchError(
                    f"no task finished for {self.stall_s:g} s; "
                    f"{len(self._pending)} of {self.stats.accepted} still unfinished"
                )


def run_options(timeout_s: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every real-process scenario has: ``--timeout`` (a global deadline),
    ``--workdir``, ``--keep`` and ``--json``."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            (
                click.option(
                    "--timeout",
                    "timeout_s",
                    default=timeout_s,
                    show_default=True,
                    type=click.FloatRange(min=1),
                    help="global deadline in seconds",
                ),
                click.option(
                    "--workdir",
                    default=None,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="where the cluster writes [a temporary directory, removed]",
                ),
                click.option("--keep", is_flag=True, help="keep the temporary directory (logs)"),
                click.option("--json", "as_json", is_flag=True, help="print one JSON object"),
            )
        ):
            command = option(command)
        return command

    return apply
