"""Inference backends: run a task type's model on a picture. Found by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgesched.config import BUNDLED_LAYOUT, Settings, TaskTypeSettings
from edgesched.errors import UnknownPluginError
from edgesched.inference.labels import Detection, format_label


@dataclass
class BackendResult:
    label: str
    detections: list[Detection]
    timings: dict[str, float] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    formats: tuple[str, ...]

    def task_types(self) -> list[str]: ...

    def warm(self) -> None:
        """Loads what it needs before the agent joins (so the first task is not slow)."""
        ...

    def run(self, task_type: str, payload: bytes) -> BackendResult: ...


def model_spec(settings: TaskTypeSettings) -> Any:
    from edgesched.inference.detectors import ModelSpec
    from edgesched.inference.model_files import LAYOUT_SHA256, bundled_layout_model

    if settings.model == BUNDLED_LAYOUT:
        path, sha = str(bundled_layout_model()), settings.sha256 or LAYOUT_SHA256
    else:
        path, sha = settings.model, settings.sha256
    return ModelSpec(
        kind=settings.kind,
        path=path,
        sha256=sha,
        score_threshold=settings.score_threshold,
        iou_threshold=settings.iou_threshold,
        class_names=tuple(settings.class_names),
    )


class OnnxBackend:
    """onnxruntime on the CPU: one session per task type, shared by the agent's slots."""

    name: str = "onnx"
    formats: tuple[str, ...] = ("onnx",)

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], threads: int = 1) -> None:
        self._tasktypes = tasktypes
        self._threads = threads
        self._detectors: dict[str, Any] = {}

    def task_types(self) -> list[str]:
        return sorted(self._tasktypes)

    def warm(self) -> None:
        for name in self._tasktypes:
            self._detector(name)

    def _detector(self, task_type: str) -> Any:
        detector = self._detectors.get(task_type)
        if detector is None:
            from edgesched.inference.detectors import load_detector

            detector = load_detector(model_spec(self._tasktypes[task_type]), self._threads)
            self._detectors[task_type] = detector
        return detector

    def run(self, task_type: str, payload: bytes) -> BackendResult:
        from edgesched.inference.images import decode_image

        t0 = time.perf_counter()
        image = decode_image(payload)
        t1 = time.perf_counter()
        detections = self._detector(task_type).detect(image)
        t2 = time.perf_counter()
        label = format_label(detections)
        t3 = time.perf_counter()
        return BackendResult(
            label=label,
            detections=detections,
            timings={
                "decode_ms": (t1 - t0) * 1000,
                "inference_ms": (t2 - t1) * 1000,
                "postprocess_ms": (t3 - t2) * 1000,
            },
        )


class SleepBackend:
    """Runs no model: a picture that decodes succeeds with an empty label (benchmarks, many
    devices, chaos runs). A broken picture still fails as it would with a model.

    The agent's emulation pacing supplies the service time.
    """

    name: str = "sleep"
    formats: tuple[str, ...] = ("onnx",)

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], threads: int = 1) -> None:
        self._names = sorted(tasktypes)

    def task_types(self) -> list[str]:
        return list(self._names)

    def warm(self) -> None:
        return None

    def run(self, task_type: str, payload: bytes) -> BackendResult:
        from edgesched.inference.images import decode_image

        t0 = time.perf_counter()
        decode_image(payload)
        decode_ms = (time.perf_counter() - t0) * 1000
        return BackendResult(label="", detections=[], timings={"decode_ms": decode_ms})


BackendFactory = Callable[[dict[str, TaskTypeSettings], int], Backend]
BACKENDS: dict[str, BackendFactory] = {"onnx": OnnxBackend, "sleep": SleepBackend}


def make_backend(settings: Settings) -> Backend:
    name = settings.agent.backend
    factory = BACKENDS.get(name)
    if factory is None:
        raise UnknownPluginError("backend", name, BACKENDS)
    return factory(settings.tasktypes, settings.agent.threads)
