"""``onnx``: onnxruntime on the CPU, the fallback every board has."""

from __future__ import annotations

import logging
from typing import Any

from edgesched.agent.backends.base import BackendResult, HeldArtefact, timed_detection
from edgesched.config import BUNDLED_LAYOUT, TaskTypeSettings
from edgesched.errors import ConfigError

log = logging.getLogger("edgesched.backend")


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
    """onnxruntime on the CPU: one session per task type, shared by the agent's slots.

    Owns its detectors (loaded on warm, one per task type allowing the CPU fallback); touches
    nothing of the agent's."""

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
