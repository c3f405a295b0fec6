"""Load a detector from a model spec: one onnxruntime session with explicit threads.

onnxruntime is imported inside :func:`load_detector` so that the master, which only sniffs
picture headers and never runs a model, does not pay for (or need) it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from edgesched.errors import ConfigError
from edgesched.inference.labels import Detection
from edgesched.inference.layout import PICODET_INPUT_HW, LayoutDetector
from edgesched.inference.model_files import verify_sha256
from edgesched.inference.yolo import DEFAULT_YOLO_INPUT_HW, YoloDetector

__all__ = ["MODEL_KINDS", "Detector", "ModelSpec", "class_names_from_metadata", "load_detector"]

MODEL_KINDS = ("picodet_layout", "yolov5", "yolov8")


@dataclass(frozen=True)
class ModelSpec:
    """What a task type runs: the model file, its decoder and its thresholds."""

    kind: str  # "picodet_layout" | "yolov5" | "yolov8"
    path: str
    sha256: str = ""
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    input_size: tuple[int, int] | None = None  # (H, W); only for models with a dynamic input
    class_names: tuple[str, ...] = ()  # empty: read them from the ONNX metadata


class Detector(Protocol):
    """Anything that turns one RGB picture into detections in its own pixel coordinates."""

    task_kind: str
    class_names: tuple[str, ...]

    def detect(self, image: Image.Image) -> list[Detection]: ...


def class_names_from_metadata(kind: str, metadata: dict[str, str]) -> tuple[str, ...]:
    """Class names stored in the model: ``character`` (Paddle) or ``names`` (Ultralytics)."""
    if kind == "picodet_layout":
        text = metadata.get("character", "")
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    raw = metadata.get("names", "")
    if not raw:
        return ()
    try:
        # Ultralytics writes str(dict): "{0: 'person', 1: 'bicycle'}". literal_eval, never eval.
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise ConfigError(f"model metadata 'names' is not a Python literal: {exc}") from None
    if isinstance(value, dict):
        keys = list(value)
        if not all(isinstance(k, int) for k in keys) or sorted(keys) != list(range(len(keys))):
            raise ConfigError(f"model metadata 'names' has keys {keys[:5]}..., not 0..n-1")
        return tuple(str(value[k]) for k in range(len(keys)))
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ConfigError(f"model metadata 'names' is a {type(value).__name__}, not a dict")


def _fixed_input_hw(session: Any) -> tuple[int, int] | None:
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ConfigError(f"model input has shape {shape}; expected [N, 3, H, W]")
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return (height, width)
    return None  # symbolic or missing dims: the model takes any size


def _input_hw(spec: ModelSpec, session: Any, default: tuple[int, int]) -> tuple[int, int]:
    fixed = _fixed_input_hw(session)
    if spec.input_size is not None:
        wanted = (int(spec.input_size[0]), int(spec.input_size[1]))
        if fixed is not None and fixed != wanted:
            raise ConfigError(
                f"input_size {wanted} does not match the model's fixed input {fixed} (H, W)"
            )
        return wanted
    return fixed or default


def _open_session(path: Path, threads: int, providers: list[str] | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(
            f"onnxruntime is not installed ({exc}); pip install onnxruntime"
        ) from None
    opts = ort.SessionOptions()
    # Explicit on both: onnxruntime's own default spreads over every core, and mixing sessions
    # with different settings in one process was measured 3× slower (model.md §2).
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's exception types are not importable portably
        raise ConfigError(f"cannot load model {path}: {exc}") from None


def load_detector(
    spec: ModelSpec, threads: int = 1, providers: list[str] | None = None
) -> Detector:
    """Open ``spec.path`` in one onnxruntime session and wrap it in the matching decoder."""
    if spec.kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {spec.kind!r}; known: {', '.join(MODEL_KINDS)}")
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    path = Path(spec.path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    if spec.sha256:
        verify_sha256(path, spec.sha256)
    session = _open_session(path, threads, providers)
    names = spec.class_names
    if not names:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        names = class_names_from_metadata(spec.kind, metadata)
    if spec.kind == "picodet_layout":
        if not names:
            raise ConfigError(f"{path} has no 'character' metadata; set class_names")
        return LayoutDetector(
            session,
            names,
            _input_hw(spec, session, PICODET_INPUT_HW),
            spec.score_threshold,
            spec.iou_threshold,
        )
    return YoloDetector(
        session,
        spec.kind,
        names,
        _input_hw(spec, session, DEFAULT_YOLO_INPUT_HW),
        spec.score_threshold,
        spec.iou_threshold,
    )
