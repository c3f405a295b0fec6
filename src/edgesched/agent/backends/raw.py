"""Backends that run no model: ``sleep`` for pictures, ``noop`` and ``busy`` for task types of
kind ``raw`` (any bytes): what the benchmarks, the many-device runs and the tests run.

``sleep`` decodes the picture (a broken one fails as with a model) and answers an empty label.

``noop`` does nothing, so a benchmark measures the master, the links and the journal alone.
``busy`` burns a calibrated amount of CPU per task (the issue's "about 5 ms of CPU work"), so
a benchmark can compare achieved throughput with the ideal one.
"""

from __future__ import annotations

import hashlib
import time

from edgesched.agent.backends.base import BackendResult, HeldArtefact
from edgesched.config import TaskTypeSettings
from edgesched.errors import BackendError


class SleepBackend:
    """Runs no model: a picture that decodes succeeds with an empty label (benchmarks, many
    devices, chaos runs). A broken picture still fails as it would with a model.

    The agent's emulation pacing supplies the service time. Owns nothing but the task type names.
    """

    name: str = "sleep"
    formats: tuple[str, ...] = ("onnx",)

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], threads: int = 1) -> None:
        self._names = sorted(n for n, t in tasktypes.items() if t.all_artefacts())

    def artefacts(self) -> list[HeldArtefact]:
        return [HeldArtefact(name, "onnx", "", "", self.name) for name in self._names]

    def warm(self) -> None:
        return None

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        from edgesched.inference.images import decode_image

        t0 = time.perf_counter()
        decode_image(payload)
        decode_ms = (time.perf_counter() - t0) * 1000
        return BackendResult(label="", detections=[], timings={"decode_ms": decode_ms})


class NoopBackend:
    """Answers every raw task at once with an empty label. Owns nothing but the task type
    names; touches nothing of the agent's."""

    name: str = "noop"
    formats: tuple[str, ...] = ("raw",)
    #: instant: the agent runs it in its event loop, not on a worker thread
    inline: bool = True

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
    """Burns ``busy_ms`` of CPU time per task (thread time, so waiting for a core is not counted
    as work done) by hashing 4 KiB blocks: CPython releases the GIL while it hashes a block that
    large, as onnxruntime does while it infers, so the agent's event loop keeps moving results
    and payloads meanwhile. Owns nothing but its busy time; touches nothing of the agent's."""

    name: str = "busy"
    inline: bool = False  #: it burns CPU: on a worker thread, as a model would

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], busy_ms: float) -> None:
        super().__init__(tasktypes)
        self.busy_ms = busy_ms

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        super().run(task_type, payload, task_id)
        start = time.thread_time()
        deadline = start + self.busy_ms / 1000
        block = (payload[:BLOCK] or b"\0").ljust(BLOCK, b"\0")
        while time.thread_time() < deadline:
            for _ in range(8):  # ~10 µs of hashing each, the GIL released
                block = hashlib.sha256(block).digest() + block[32:]
        ms = (time.thread_time() - start) * 1000
        return BackendResult(label="", detections=[], timings={"inference_ms": ms})


BLOCK = 4096  #: over 2047 bytes, hashlib hashes without holding the GIL
