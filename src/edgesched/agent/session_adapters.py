"""Session-like adapters, so the one set of decoders (LayoutDetector, YoloDetector) runs on every
runtime (devices.md §8.2: pre- and post-processing stay outside the backend).

The decoders use four things of an onnxruntime session: ``run(None, {name: tensor})``,
``get_inputs()[0].name`` / ``.shape`` and ``get_modelmeta().custom_metadata_map``. The adapters
give them the same surface over RKNNLite (``.rknn``) and ais_bench's InferSession (``.om``).
They always *show* the decoder an NCHW input; an artefact declared ``input_layout = "nhwc"`` is
transposed inside ``run``. Compiled artefacts carry no class names, so their metadata map is
empty and the names come from the task type's ``class_names``.

Vendor modules are imported inside the constructors: the project installs and tests on a plain
x86 machine, and a board imports only its own SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgesched.agent.backends import timed_detection
from edgesched.errors import BackendError, ConfigError
from edgesched.inference.detectors import Detector, ModelSpec, class_names_from_metadata
from edgesched.inference.layout import PICODET_INPUT_HW, LayoutDetector
from edgesched.inference.yolo import DEFAULT_YOLO_INPUT_HW, YoloDetector

__all__ = [
    "NPU_CORE_MASKS",
    "AisBenchSession",
    "ModelMeta",
    "RknnSession",
    "TensorInfo",
    "default_input_hw",
    "detector_for_session",
    "timed_detection",
]

#: RKNNLite's NPU_CORE_0, NPU_CORE_1, NPU_CORE_2: one runtime per core gives the throughput.
NPU_CORE_MASKS = (1, 2, 4)
RKNN_PACKAGE = (
    "rknn-toolkit-lite2 (the wheel for this Python from Rockchip's rknn-toolkit2 releases, "
    "with librknnrt.so in /usr/lib)"
)
AIS_BENCH_PACKAGE = (
    "the ais_bench and aclruntime wheels (Huawei's ais-bench tool), with the CANN environment "
    "sourced: source /usr/local/Ascend/ascend-toolkit/set_env.sh"
)
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


def _check_layout(layout: str) -> str:
    key = layout.strip().lower()
    if key not in LAYOUTS:
        raise ConfigError(f"input_layout must be nchw or nhwc, not {layout!r}")
    return key


def _single_feed(feeds: Mapping[str, Any]) -> npt.NDArray[Any]:
    if len(feeds) != 1:
        raise BackendError(f"one input expected, got {len(feeds)}")
    return np.asarray(next(iter(feeds.values())))


class _VendorSession:
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


class RknnSession(_VendorSession):
    """One RKNNLite runtime on one NPU core (``core_mask`` None: the driver picks, as RK356x
    needs). Not for concurrent use: the backend hands each runtime to one thread at a time."""

    def __init__(
        self,
        path: str,
        input_hw: tuple[int, int],
        core_mask: int | None = None,
        input_layout: str = "nchw",
    ) -> None:
        api = import_vendor("rknnlite.api", RKNN_PACKAGE)
        self.core_mask = core_mask
        self._layout = _check_layout(input_layout)
        self._inputs = [TensorInfo("input", [1, 3, input_hw[0], input_hw[1]])]
        self._outputs: list[TensorInfo] = []
        self._rknn: Any = api.RKNNLite()
        ret = self._rknn.load_rknn(path)
        if ret != 0:
            self.release()
            raise ConfigError(f"cannot load model {path}: RKNNLite.load_rknn returned {ret}")
        ret = (
            self._rknn.init_runtime()
            if core_mask is None
            else self._rknn.init_runtime(core_mask=core_mask)
        )
        if ret != 0:
            self.release()
            raise ConfigError(
                f"cannot start {path} on NPU core mask {core_mask}: "
                f"RKNNLite.init_runtime returned {ret}"
            )

    # RKNNLite cannot describe its outputs: get_outputs() is empty until the first run

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        outputs = self._rknn.inference(inputs=[self._feed(feeds)], data_format=[self._layout])
        if outputs is None:  # RKNNLite logs its error and returns None
            raise BackendError(f"RKNNLite.inference on core mask {self.core_mask} failed")
        result = [np.asarray(o) for o in outputs]
        if not self._outputs:
            self._outputs = [TensorInfo(f"output{i}", list(o.shape)) for i, o in enumerate(result)]
        return result

    def release(self) -> None:
        rknn, self._rknn = self._rknn, None
        if rknn is not None:
            rknn.release()


class AisBenchSession(_VendorSession):
    """An Ascend ``.om`` model through ais_bench's InferSession on NPU ``device_id``."""

    def __init__(self, path: str, device_id: int = 0, input_layout: str = "nchw") -> None:
        interface = import_vendor("ais_bench.infer.interface", AIS_BENCH_PACKAGE)
        self._layout = _check_layout(input_layout)
        try:
            self._session: Any = interface.InferSession(device_id, path)
        except Exception as exc:  # aclruntime raises plain RuntimeErrors and more
            raise ConfigError(f"cannot load model {path} on NPU {device_id}: {exc}") from None
        described = self._session.get_inputs()
        if len(described) != 1:
            raise ConfigError(f"{path} has {len(described)} inputs; the decoders feed one")
        shape = [int(d) for d in described[0].shape]
        if len(shape) != 4:
            raise ConfigError(f"{path} has input shape {shape}; expected 4 dimensions")
        if self._layout == "nhwc":
            shape = [shape[0], shape[3], shape[1], shape[2]]  # the decoders' NCHW view
        self._inputs = [TensorInfo(str(described[0].name), shape)]
        self._outputs = [
            TensorInfo(str(o.name), [int(d) for d in o.shape]) for o in self._session.get_outputs()
        ]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        outputs = self._session.infer(feeds=[self._feed(feeds)], mode="static")
        return [np.asarray(o) for o in outputs]

    def release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.free_resource()


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
