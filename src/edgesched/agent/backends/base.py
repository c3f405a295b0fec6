"""What every inference backend is: the protocol the agent runs tasks through, and the types it
hands back. Implementations live one per module beside this one; ``registry`` finds them by name.

A backend owns its models and runtimes (loading, warming, running one picture); it may not touch
the link, the agent's slots or the outbox: the agent calls ``run`` on a worker thread, and what a
backend raises becomes the task's failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgesched.inference.labels import Detection, format_label


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
    """Runs a task type's model on a payload; says which models it holds. A backend whose
    ``run`` returns at once and never blocks may say so with a class attribute ``inline = True``
    (``noop``): the agent then runs it in its event loop instead of on a worker thread."""

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
