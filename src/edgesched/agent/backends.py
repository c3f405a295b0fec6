"""Inference backends: run a task type's model on a picture. Found by name."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgesched.config import BUNDLED_LAYOUT, MODEL_FORMATS, Settings, TaskTypeSettings
from edgesched.errors import BackendError, ConfigError, UnknownPluginError
from edgesched.inference.labels import Detection, format_label

log = logging.getLogger("edgesched.backend")


@dataclass
class BackendResult:
    label: str
    detections: list[Detection]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HeldArtefact:
    """A model this board holds and can run: what the agent advertises, per task type."""

    task_type: str
    format: str
    target: str = ""
    sha256: str = ""
    backend: str = ""


class Backend(Protocol):
    name: str
    formats: tuple[str, ...]

    def artefacts(self) -> list[HeldArtefact]:
        """What it can run; valid after warm()."""
        ...

    def warm(self) -> None:
        """Loads what it needs before the agent joins (so the first task is not slow)."""
        ...

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult: ...


def timed_detection(payload: bytes, detect: Callable[[Any], list[Detection]]) -> BackendResult:
    """Decode ``payload`` (a bad picture raises BadInputError), detect, format the label —
    the same for every backend that runs a detector, each step timed."""
    from edgesched.inference.images import decode_image

    t0 = time.perf_counter()
    image = decode_image(payload)
    t1 = time.perf_counter()
    detections = detect(image)
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
        # a CPU board runs the ONNX model only where the task type allows the CPU fallback
        self._tasktypes = {n: t for n, t in tasktypes.items() if t.model and t.cpu_fallback}
        self._threads = threads
        self._detectors: dict[str, Any] = {}

    def artefacts(self) -> list[HeldArtefact]:
        return [
            HeldArtefact(name, "onnx", "", model_spec(self._tasktypes[name]).sha256, self.name)
            for name in sorted(self._detectors)
        ]

    def warm(self) -> None:
        for name in list(self._tasktypes):
            try:
                self._detector(name)
            except ConfigError as exc:  # one missing model must not take the others down
                log.warning("task type %s not served: %s", name, exc)
                del self._tasktypes[name]

    def _detector(self, task_type: str) -> Any:
        detector = self._detectors.get(task_type)
        if detector is None:
            from edgesched.inference.detectors import load_detector

            detector = load_detector(model_spec(self._tasktypes[task_type]), self._threads)
            self._detectors[task_type] = detector
        return detector

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        return timed_detection(payload, self._detector(task_type).detect)


class SleepBackend:
    """Runs no model: a picture that decodes succeeds with an empty label (benchmarks, many
    devices, chaos runs). A broken picture still fails as it would with a model.

    The agent's emulation pacing supplies the service time.
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


class CompositeBackend:
    """Several backends on one board: each task type runs on the one holding its best format
    (a compiled .rknn on the NPU before the ONNX fallback on the CPU)."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self.name = "+".join(b.name for b in backends)
        self.formats = tuple(f for b in backends for f in b.formats)
        self._route: dict[str, Backend] = {}

    def warm(self) -> None:
        for backend in self.backends:
            backend.warm()
        ranked: dict[str, tuple[int, Backend]] = {}
        for backend in self.backends:
            for held in backend.artefacts():
                rank = MODEL_FORMATS.index(held.format) if held.format in MODEL_FORMATS else 99
                if held.task_type not in ranked or rank < ranked[held.task_type][0]:
                    ranked[held.task_type] = (rank, backend)
        self._route = {task_type: backend for task_type, (_, backend) in ranked.items()}

    def artefacts(self) -> list[HeldArtefact]:
        return [a for b in self.backends for a in b.artefacts()]

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        backend = self._route.get(task_type)
        if backend is None:
            raise BackendError(f"no backend on this board holds a model for {task_type!r}")
        return backend.run(task_type, payload, task_id)


BackendFactory = Callable[[Settings, str], Backend]


def _onnx(settings: Settings, device_type: str) -> Backend:
    return OnnxBackend(settings.tasktypes, settings.agent.threads)


def _sleep(settings: Settings, device_type: str) -> Backend:
    return SleepBackend(settings.tasktypes, settings.agent.threads)


def _onnx_ep(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.providers import OrtAcceleratedBackend

    cache = Path(settings.agent.data_dir) / "cache"
    return OrtAcceleratedBackend(settings.tasktypes, settings.agent.threads, device_type, cache)


def _rknn(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.native_backends import RknnBackend

    return RknnBackend(settings.tasktypes, settings.agent.threads)


def _ascend_om(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.native_backends import AscendOmBackend

    return AscendOmBackend(settings.tasktypes, settings.agent.threads)


def _filedrop(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.filedrop import FileDropBackend

    a = settings.agent
    root = Path(a.filedrop_dir) if a.filedrop_dir else Path(a.data_dir) / "data"
    return FileDropBackend(
        sorted(n for n, t in settings.tasktypes.items() if not t.raw),
        root / "input",
        root / "output",
        interval_s=a.interval_s,
        timeout_s=a.filedrop_timeout_s,
    )


def _noop(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.raw_backends import NoopBackend

    return NoopBackend(settings.tasktypes)


def _busy(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.raw_backends import BusyBackend

    return BusyBackend(settings.tasktypes, settings.agent.busy_ms)


# Vendor modules are imported inside the factories: only the backend a board uses is loaded.
BACKENDS: dict[str, BackendFactory] = {
    "onnx": _onnx,
    "sleep": _sleep,
    "onnx_ep": _onnx_ep,
    "rknn": _rknn,
    "ascend_om": _ascend_om,
    "filedrop": _filedrop,
    "noop": _noop,
    "busy": _busy,
}

#: what ``--backend auto`` runs on each kind of board, best first
AUTO_BACKENDS = {
    "rk3588": ("rknn", "onnx"),
    "atlas310": ("ascend_om", "onnx_ep"),
    "orin": ("onnx_ep",),
    "nvidia": ("onnx_ep",),
}


def make_backend(settings: Settings, device_type: str = "cpu") -> Backend:
    """The backend(s) named by ``agent.backend``: a name, a comma-separated list, or auto."""
    spec = settings.agent.backend
    if spec == "auto":
        names = [n for n in AUTO_BACKENDS.get(device_type, ("onnx",)) if n in BACKENDS]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name not in BACKENDS:
            raise UnknownPluginError("backend", name, [*BACKENDS, "auto"])
    backends = [BACKENDS[name](settings, device_type) for name in names]
    return backends[0] if len(backends) == 1 else CompositeBackend(backends)
