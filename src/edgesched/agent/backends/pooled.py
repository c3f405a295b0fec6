"""What the backends for compiled artefacts share: ``.rknn`` on RK3588 through RKNNLite, one
runtime per NPU core (``rknn``), and Ascend ``.om`` through ais_bench's InferSession
(``ascend_om``) (devices.md §5.3, §5.4).

Each builds, per task type that has a usable artefact, a small pool of detectors, one per runtime
instance (NPU core, NPU chip), and hands each run to a free one: the RK3588's three cores run three
pictures at once, where a single runtime with mask 7 would split only some operators over them.
An artefact is usable when its file exists and its sha256 matches (when one is set); only those
task types are advertised.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from edgesched.agent.backends.base import BackendResult, HeldArtefact, timed_detection
from edgesched.agent.backends.sessions import detector_for_session
from edgesched.config import ArtefactSettings, TaskTypeSettings
from edgesched.errors import ConfigError, UnknownTaskTypeError
from edgesched.inference.detectors import Detector, ModelSpec
from edgesched.inference.labels import Detection
from edgesched.inference.model_files import verify_sha256

__all__ = [
    "DetectorPool",
    "PooledBackend",
    "artefact_spec",
    "usable_artefacts",
]

log = logging.getLogger(__name__)


def usable_artefacts(
    tasktypes: dict[str, TaskTypeSettings], fmt: str, target: str = ""
) -> dict[str, ArtefactSettings]:
    """Per task type, its first ``fmt`` artefact built for ``target`` (or for any chip) whose
    file is here and intact. ``target`` "" accepts every artefact of the format."""
    held: dict[str, ArtefactSettings] = {}
    for name, tt in tasktypes.items():
        for artefact in tt.artefacts:
            if artefact.format != fmt:
                continue
            if target and artefact.target and artefact.target.lower() != target.lower():
                continue
            if not Path(artefact.file).is_file():
                log.info("task type %s: no %s file at %s", name, fmt, artefact.file)
                continue
            if artefact.sha256:
                try:
                    verify_sha256(artefact.file, artefact.sha256)
                except ConfigError as exc:
                    # Not fatal: the board simply does not advertise what it cannot trust.
                    log.warning("task type %s: %s", name, exc)
                    continue
            held[name] = artefact
            break
    return held


def artefact_spec(tt: TaskTypeSettings, artefact: ArtefactSettings) -> ModelSpec:
    """The decoder settings of the task type, with the compiled file as the model."""
    return ModelSpec(
        kind=tt.kind,
        path=artefact.file,
        sha256=artefact.sha256,
        score_threshold=tt.score_threshold,
        iou_threshold=tt.iou_threshold,
        class_names=tuple(tt.class_names),
    )


class DetectorPool:
    """Detectors of one model, each on its own runtime instance. A run takes a free one and
    gives it back, so up to ``len(detectors)`` runs go at once and never share a runtime."""

    def __init__(self, detectors: Sequence[Detector], sessions: Sequence[Any]) -> None:
        self._free: queue.Queue[Detector] = queue.Queue()
        for detector in detectors:
            self._free.put(detector)
        self.sessions = list(sessions)

    def detect(self, image: Image.Image) -> list[Detection]:
        detector = self._free.get()  # blocks while every instance is busy
        try:
            return detector.detect(image)
        finally:
            self._free.put(detector)

    def close(self) -> None:
        for session in self.sessions:
            session.release()
        self.sessions = []


class PooledBackend:
    """The shared part: which task types, building pools on first use, running.

    Owns the usable artefacts and their runtime pools (and releases them on close); a subclass
    says only which runtime instances there are and how to open one."""

    name: str = ""
    formats: tuple[str, ...] = ()

    def __init__(self, tasktypes: dict[str, TaskTypeSettings], target: str) -> None:
        self._tasktypes = tasktypes
        self._held = usable_artefacts(tasktypes, self.formats[0], target)
        self._pools: dict[str, DetectorPool] = {}
        self._lock = threading.Lock()

    def _instances(self) -> Sequence[Any]:
        raise NotImplementedError

    def _open(self, spec: ModelSpec, artefact: ArtefactSettings, instance: Any) -> Any:
        raise NotImplementedError

    def artefacts(self) -> list[HeldArtefact]:
        """The artefacts whose runtimes are up (after warm)."""
        with self._lock:
            loaded = [(name, self._held[name]) for name in sorted(self._pools)]
        return [HeldArtefact(n, a.format, a.target, a.sha256, self.name) for n, a in loaded]

    def warm(self) -> None:
        for name in list(self._held):
            try:
                self._pool(name)
            except ConfigError as exc:  # as OnnxBackend: one bad model must not stop the rest
                log.warning("task type %s not served by %s: %s", name, self.name, exc)
                del self._held[name]

    def _pool(self, task_type: str) -> DetectorPool:
        # Locked: slots asking for a cold task type at once must not open the model twice.
        with self._lock:
            pool = self._pools.get(task_type)
            if pool is None:
                pool = self._build(task_type)
                self._pools[task_type] = pool
            return pool

    def _build(self, task_type: str) -> DetectorPool:
        artefact = self._held[task_type]
        spec = artefact_spec(self._tasktypes[task_type], artefact)
        sessions: list[Any] = []
        try:
            for instance in self._instances():
                sessions.append(self._open(spec, artefact, instance))
            detectors = [detector_for_session(spec, s) for s in sessions]
        except BaseException:
            for session in sessions:  # a half-built pool would hold NPU memory for nothing
                session.release()
            raise
        log.info("%s: %s on %d runtime(s) of %s", task_type, spec.path, len(sessions), self.name)
        return DetectorPool(detectors, sessions)

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        if task_type not in self._held:
            raise UnknownTaskTypeError(task_type, self._held)
        return timed_detection(payload, self._pool(task_type).detect)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
