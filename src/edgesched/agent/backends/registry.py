"""The backends by name: ``agent.backend`` (a name, a comma-separated list, or auto) → one
backend for this board. An unknown name is an error listing the known ones.

Vendor modules are imported inside the factories: only the backend a board uses is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgesched.agent.backends.base import Backend
from edgesched.agent.backends.composite import CompositeBackend
from edgesched.boards import ATLAS310, CPU, NVIDIA, ORIN, RK3588
from edgesched.config import Settings
from edgesched.errors import UnknownPluginError

BackendFactory = Callable[[Settings, str], Backend]


def _onnx(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.onnx import OnnxBackend

    return OnnxBackend(settings.tasktypes, settings.agent.threads)


def _sleep(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.raw import SleepBackend

    return SleepBackend(settings.tasktypes, settings.agent.threads)


def _onnx_ep(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.onnx_ep import OrtAcceleratedBackend

    cache = Path(settings.agent.data_dir) / "cache"
    return OrtAcceleratedBackend(settings.tasktypes, settings.agent.threads, device_type, cache)


def _rknn(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.rknn import RknnBackend

    return RknnBackend(settings.tasktypes, settings.agent.threads)


def _ascend_om(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.ascend_om import AscendOmBackend

    return AscendOmBackend(settings.tasktypes, settings.agent.threads)


def _filedrop(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.filedrop import FileDropBackend

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
    from edgesched.agent.backends.raw import NoopBackend

    return NoopBackend(settings.tasktypes)


def _busy(settings: Settings, device_type: str) -> Backend:
    from edgesched.agent.backends.raw import BusyBackend

    return BusyBackend(settings.tasktypes, settings.agent.busy_ms)


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
    RK3588: ("rknn", "onnx"),
    ATLAS310: ("ascend_om", "onnx_ep"),
    ORIN: ("onnx_ep",),
    NVIDIA: ("onnx_ep",),
}


def make_backend(settings: Settings, device_type: str = CPU) -> Backend:
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
