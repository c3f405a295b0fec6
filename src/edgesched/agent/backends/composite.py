"""Several backends on one board, each task type routed to the best format it holds."""

from __future__ import annotations

from edgesched.agent.backends.base import Backend, BackendResult, HeldArtefact
from edgesched.config import MODEL_FORMATS
from edgesched.errors import BackendError


class CompositeBackend:
    """Several backends on one board: each task type runs on the one holding its best format
    (a compiled .rknn on the NPU before the ONNX fallback on the CPU).

    Owns only the routing table; the models stay with the backends it wraps."""

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
