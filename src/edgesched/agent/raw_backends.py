"""Backends for task types of kind ``raw`` (any bytes, no model): what the benchmarks run.

``noop`` does nothing, so a benchmark measures the master, the links and the journal alone.
``busy`` burns a calibrated amount of CPU per task (the issue's "about 5 ms of CPU work"), so
a benchmark can compare achieved throughput with the ideal one.
"""

from __future__ import annotations

import hashlib
import time

from edgesched.agent.backends import BackendResult, HeldArtefact
from edgesched.config import TaskTypeSettings
from edgesched.errors import BackendError


class NoopBackend:
    """Answers every raw task at once with an empty label."""

    name: str = "noop"
    formats: tuple[str, ...] = ("raw",)

    def __init__(self, tasktypes: dict[str, TaskTypeSettings]) -> None:
        self._names = sorted(n for n, t in tasktypes.items() if t.raw)

    def artefacts(self) -> list[HeldArtefact]:
        return [HeldArtefact(name, "raw", "", "", self.name) for name in self._names]

    def warm(self) -> None:
        return None

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        if task_type not in self._names:
            raise BackendError(f"{self.name} runs raw task types only, not {task_type!r}")
        return BackendResult(label="", detections=[], timings={})


class BusyBackend(NoopBackend):
    """Hashes the payload over and over for ``busy_ms`` of CPU time (thread time, so a task
    waiting for the GIL or a core is not counted as work done)."""

    name: str = "busy"

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], busy_ms: float) -> None:
        super().__init__(tasktypes)
        self.busy_ms = busy_ms

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        super().run(task_type, payload, task_id)
        start = time.thread_time()
        deadline = start + self.busy_ms / 1000
        digest = hashlib.sha256(payload[:4096])
        while time.thread_time() < deadline:
            for _ in range(20):  # ~20 µs of work between clock reads
                digest = hashlib.sha256(digest.digest())
        ms = (time.thread_time() - start) * 1000
        return BackendResult(label="", detections=[], timings={"inference_ms": ms})
