"""onnxruntime on the board's accelerator: which execution providers, in which order, and a
fallback when one that onnxruntime lists still fails at session creation (devices.md §5.2).

Preference per board: CANN on Ascend, TensorRT then CUDA on Jetson and NVIDIA GPUs, the CPU
everywhere (RK3588's NPU is not reachable through onnxruntime: the RKNPU provider targets only
the RK1808). onnxruntime is imported inside the functions, as in ``inference.detectors``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from edgesched import boards
from edgesched.agent.backends.base import BackendResult, HeldArtefact, timed_detection
from edgesched.agent.backends.onnx import model_spec
from edgesched.agent.backends.sessions import detector_for_session
from edgesched.boards import ATLAS310, NVIDIA, ORIN, RK3588
from edgesched.config import TaskTypeSettings
from edgesched.errors import ConfigError, UnknownTaskTypeError
from edgesched.inference.detectors import Detector
from edgesched.inference.model_files import verify_sha256

__all__ = [
    "CPU",
    "PREFERENCES",
    "OrtAcceleratedBackend",
    "open_session",
    "provider_options",
    "providers_for",
]

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CANN = "CANNExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"

_ASCEND = (CANN, CPU)
_NVIDIA = (TENSORRT, CUDA, CPU)
PREFERENCES: dict[str, tuple[str, ...]] = {
    ATLAS310: _ASCEND,
    "ascend": _ASCEND,  # the probes' names for the same boards
    ORIN: _NVIDIA,
    "jetson": _NVIDIA,
    NVIDIA: _NVIDIA,
    RK3588: (CPU,),
    boards.CPU: (CPU,),
}
# The spellings the seed and the CLI accept for the same boards.
_ALIASES = {"atlas_i": ATLAS310}


def _board(device_type: str) -> str:
    key = device_type.strip().lower()
    return _ALIASES.get(key, key)


def providers_for(device_type: str, available: list[str]) -> list[str]:
    """The providers to try for ``device_type``, best first, keeping those in ``available``.

    An unknown device type gets the CPU only. The CPU provider ends every list even when
    ``available`` omits it: every onnxruntime build has it, and it is the last resort.
    """
    wanted = PREFERENCES.get(_board(device_type), (CPU,))
    chosen = [p for p in wanted if p in available and p != CPU]
    return [*chosen, CPU]


def provider_options(provider: str, device_type: str, cache_dir: str | Path) -> dict[str, Any]:
    """Options for one provider on this board (value types as onnxruntime's docs give them)."""
    if provider == TENSORRT:
        # Without the engine cache every process start rebuilds the engine (minutes on a Nano).
        # Engines fit one GPU model and TensorRT version only, hence a directory per board type.
        path = Path(cache_dir) / "tensorrt" / _board(device_type)
        path.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": 0,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(path),
        }
    if provider in (CANN, CUDA):
        return {"device_id": 0}
    return {}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"onnxruntime is not installed ({exc}); pip install onnxruntime "
            "(onnxruntime-cann on Ascend, onnxruntime-gpu or the Jetson Zoo build on NVIDIA)"
        ) from None
    return onnxruntime


def open_session(
    path: str | Path, threads: int, device_type: str, cache_dir: str | Path
) -> tuple[Any, str]:
    """Open ``path`` with the board's best provider that works; returns (session, provider).

    A provider that onnxruntime lists can still fail when the session is created (driver,
    toolkit or library versions), so each failure drops the first provider and tries the rest,
    down to the CPU alone.
    """
    ort = _import_onnxruntime()
    chain = providers_for(device_type, list(ort.get_available_providers()))
    last_error: Exception | None = None
    for start in range(len(chain)):
        tried = chain[start:]
        opts = ort.SessionOptions()
        # Explicit on both, as in inference.detectors: onnxruntime's default takes every core.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
        providers = [(p, provider_options(p, device_type, cache_dir)) for p in tried]
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime's exception types are not importable portably
            last_error = exc
            log.warning("%s failed for %s (%s); trying %s", tried[0], path, exc, tried[1:] or "-")
            continue
        # onnxruntime may itself have dropped a provider that failed to register: report the
        # one it actually put first, not the one we asked for.
        used = str((session.get_providers() or [tried[0]])[0])
        log.info("model %s runs on %s (board %s)", path, used, device_type)
        return session, used
    raise ConfigError(f"cannot load model {path}: {last_error}")


class OrtAcceleratedBackend:
    """onnxruntime with the board's execution providers: one session per task type, shared by
    the agent's slots (an onnxruntime session may run from several threads at once).

    Owns its sessions and the provider each one ended on; touches nothing of the agent's."""

    name: str = "onnx_ep"
    formats: tuple[str, ...] = ("onnx",)

    def __init__(
        self,
        tasktypes: dict[str, TaskTypeSettings],
        threads: int = 1,
        device_type: str = boards.CPU,
        cache_dir: str | Path = "workspace/slave/cache",
    ) -> None:
        self._tasktypes = {name: tt for name, tt in tasktypes.items() if tt.model}
        self._threads = threads
        self._device_type = device_type
        self._cache_dir = Path(cache_dir)
        self._detectors: dict[str, Detector] = {}
        #: the provider each task type's session runs on, once loaded
        self.provider_used: dict[str, str] = {}
        self._lock = threading.Lock()

    def artefacts(self) -> list[HeldArtefact]:
        """The task types whose sessions are open (after warm)."""
        with self._lock:
            loaded = sorted(self._detectors)
        return [
            HeldArtefact(name, "onnx", "", model_spec(self._tasktypes[name]).sha256, self.name)
            for name in loaded
        ]

    def warm(self) -> None:
        for name in list(self._tasktypes):
            try:
                self._detector(name)
            except ConfigError as exc:  # as OnnxBackend: one bad model must not stop the rest
                log.warning("task type %s not served by %s: %s", name, self.name, exc)
                del self._tasktypes[name]
                continue
            if self.provider_used[name] == CPU and not self._tasktypes[name].cpu_fallback:
                # Every accelerator provider failed, and this task type may not run on a CPU.
                log.warning("task type %s not served: no accelerator, cpu_fallback is off", name)
                with self._lock:
                    del self._detectors[name]
                del self._tasktypes[name]

    def _detector(self, task_type: str) -> Detector:
        # Locked: two slots asking for the same cold task type must not build two sessions.
        with self._lock:
            detector = self._detectors.get(task_type)
            if detector is None:
                spec = model_spec(self._tasktypes[task_type])
                if not Path(spec.path).is_file():
                    raise ConfigError(f"model file {spec.path} does not exist")
                if spec.sha256:
                    verify_sha256(spec.path, spec.sha256)
                session, used = open_session(
                    spec.path, self._threads, self._device_type, self._cache_dir
                )
                detector = detector_for_session(spec, session)
                self._detectors[task_type] = detector
                self.provider_used[task_type] = used
            return detector

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        if task_type not in self._tasktypes:
            raise UnknownTaskTypeError(task_type, self._tasktypes)
        return timed_detection(payload, self._detector(task_type).detect)
