"""Inference backends, one per module, behind one protocol (``base``), found by name
(``registry``): ``onnx`` (CPU), ``onnx_ep`` (onnxruntime's execution providers), ``rknn`` and
``ascend_om`` (compiled artefacts, on ``pooled`` runtimes through ``sessions`` adapters),
``filedrop`` (an external engine), ``sleep``/``noop``/``busy`` (``raw``: no model; the tests' and
benchmarks' doubles) and ``composite`` (several on one board).
"""

from __future__ import annotations

from edgesched.agent.backends.base import Backend, BackendResult, HeldArtefact, timed_detection
from edgesched.agent.backends.registry import AUTO_BACKENDS, BACKENDS, make_backend

__all__ = [
    "AUTO_BACKENDS",
    "BACKENDS",
    "Backend",
    "BackendResult",
    "HeldArtefact",
    "make_backend",
    "timed_detection",
]
