"""Session-like adapters, so the one set of decoders (LayoutDetector, YoloDetector) runs on every
runtime (devices.md §8.2: pre- and post-processing stay outside the backend).

The decoders use four things of an onnxruntime session: ``run(None, {name: tensor})``,
``get_inputs()[0].name`` / ``.shape`` and ``get_modelmeta().custom_metadata_map``. The adapters
give them the same surface over RKNNLite (``.rknn``, in ``rknn``) and ais_bench's InferSession
(``.om``, in ``ascend_om``); onnxruntime's own sessions (``onnx_ep``) need none.
They always *show* the decoder an NCHW input; an artefact declared ``input_layout = "nhwc"`` is
transposed inside ``run``. Compiled artefacts carry no class names, so their metadata map is
empty and the names come from the task type's ``class_names``.

Vendor modules are imported inside the constructors: the project installs and tests on a plain
x86 machine, and a board imports only its own SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgesched.errors import BackendError, ConfigError
from edgesched.inference.detectors import Detector, ModelSpec, class_names_from_metadata
from edgesched.inference.layout import PICODET_INPUT_HW, LayoutDetector
from edgesched.inference.yolo import DEFAULT_YOLO_INPUT_HW, YoloDetector

__all__ = [
    "ModelMeta",
    "TensorInfo",
    "VendorSession",
    "check_layout",
    "default_input_hw",
    "detector_for_session",
    "import_vendor",
]

LAYOUTS = ("nchw", "nhwc")


@dataclass
class TensorInfo:
    """What ``get_inputs()`` / ``get_outputs()`` give: a name and a shape, as onnxruntime's."""

    name: str
    shape: list[int]


@dataclass
class ModelMeta:
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def import_vendor(module: str, package: str) -> Any:
    """Import a vendor SDK module, or say which package the board lacks."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: the module is there, its .so is not
        raise ConfigError(f"cannot import {module} ({exc}); install {package}") from None


def default_input_hw(kind: str) -> tuple[int, int]:
    return PICODET_INPUT_HW if kind == "picodet_layout" else DEFAULT_YOLO_INPUT_HW


def check_layout(layout: str) -> str:
    key = layout.strip().lower()
    if key not in LAYOUTS:
        raise ConfigError(f"input_layout must be nchw or nhwc, not {layout!r}")
    return key


def _single_feed(feeds: Mapping[str, Any]) -> npt.NDArray[Any]:
    if len(feeds) != 1:
        raise BackendError(f"one input expected, got {len(feeds)}")
    return np.asarray(next(iter(feeds.values())))


class VendorSession:
    """What the decoders read of a session, the same for every vendor runtime: the NCHW view of
    its input, its outputs, no metadata (class names then come from the task type's config)."""

    _layout = "nchw"
    _inputs: list[TensorInfo]
    _outputs: list[TensorInfo]

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta()

    def _feed(self, feeds: Mapping[str, Any]) -> npt.NDArray[Any]:
        """The one input, in the layout the artefact was compiled for."""
        tensor = _single_feed(feeds)
        if self._layout == "nhwc":
            tensor = tensor.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(tensor)


def _input_hw(spec: ModelSpec, session: Any) -> tuple[int, int]:
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ConfigError(f"model input has shape {shape}; expected [N, 3, H, W]")
    height, width = shape[2], shape[3]
    fixed: tuple[int, int] | None = None  # symbolic or -1 dimensions: the model takes any size
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        fixed = (height, width)
    if spec.input_size is not None:
        wanted = (int(spec.input_size[0]), int(spec.input_size[1]))
        if fixed is not None and fixed != wanted:
            raise ConfigError(f"input_size {wanted} does not match the model's input {fixed}")
        return wanted
    return fixed or default_input_hw(spec.kind)


def detector_for_session(spec: ModelSpec, session: Any) -> Detector:
    """Wrap an opened session (onnxruntime's or an adapter) in the decoder for ``spec.kind``."""
    names = spec.class_names
    if not names:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        names = class_names_from_metadata(spec.kind, metadata)
    hw = _input_hw(spec, session)
    if spec.kind == "picodet_layout":
        # As load_detector: a YOLO model may go without names (labels carry class ids only).
        if not names:
            raise ConfigError(
                f"{spec.path} carries no class names; set class_names for its task type"
            )
        return LayoutDetector(session, names, hw, spec.score_threshold, spec.iou_threshold)
    return YoloDetector(session, spec.kind, names, hw, spec.score_threshold, spec.iou_threshold)
