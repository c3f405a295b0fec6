"""YOLOv5 and YOLOv8 (Ultralytics) ONNX exports: letterbox in, standard output layouts out.

* YOLOv8: output ``[1, 4 + nc, N]``: cx, cy, w, h, then per-class scores; no objectness.
* YOLOv5: output ``[1, N, 5 + nc]``: cx, cy, w, h, objectness, then per-class scores;
  a box's score is objectness × class score (seed-system.md §2.7), best class only.

The decode functions are pure, so they are tested on hand-built arrays without any model.
"""

from __future__ import annotations

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
    "DEFAULT_YOLO_INPUT_HW",
    "YoloDetector",
    "decode_yolov5",
    "decode_yolov8",
    "letterbox",
    "preprocess_yolo",
]

DEFAULT_YOLO_INPUT_HW = (640, 640)
LETTERBOX_FILL = 114
# Ultralytics caps the candidates that enter NMS; with a sane threshold this never bites.
MAX_NMS_CANDIDATES = 30_000


def letterbox(
    image: Image.Image, input_hw: tuple[int, int], fill: int = LETTERBOX_FILL
) -> tuple[Image.Image, InputTransform]:
    """Resize keeping the aspect ratio and centre on a grey canvas of ``input_hw`` (H, W)."""
    height, width = input_hw
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    gain = min(height / image.height, width / image.width)
    new_w = max(1, round(image.width * gain))
    new_h = max(1, round(image.height * gain))
    # Ultralytics' rounding: an odd pad puts the extra pixel right and bottom.
    left = round((width - new_w) / 2 - 0.1)
    top = round((height - new_h) / 2 - 0.1)
    canvas = Image.new("RGB", (width, height), (fill, fill, fill))
    resized = (
        rgb if (new_w, new_h) == rgb.size else rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    )
    canvas.paste(resized, (left, top))
    transform = InputTransform(
        orig_width=image.width,
        orig_height=image.height,
        scale_x=new_w / image.width,
        scale_y=new_h / image.height,
        pad_x=float(left),
        pad_y=float(top),
    )
    return canvas, transform


def preprocess_yolo(
    image: Image.Image, input_hw: tuple[int, int]
) -> tuple[npt.NDArray[np.float32], InputTransform]:
    """Letterboxed, RGB, [0, 1], ``[1, 3, H, W]`` float32 input and its transform."""
    canvas, transform = letterbox(image, input_hw)
    pixels = np.asarray(canvas)  # uint8 H×W×RGB
    tensor = np.empty((1, 3, pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    for c in range(3):  # per plane: far cheaper than a float copy plus a transpose
        np.multiply(pixels[:, :, c], np.float32(1.0 / 255.0), out=tensor[0, c], casting="unsafe")
    return tensor, transform


def _xywh_to_xyxy(xywh: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    xywh = xywh.astype(np.float64)
    half_w = xywh[:, 2] / 2
    half_h = xywh[:, 3] / 2
    return np.stack(
        (xywh[:, 0] - half_w, xywh[:, 1] - half_h, xywh[:, 0] + half_w, xywh[:, 1] + half_h),
        axis=1,
    )


def _finish(
    xywh: npt.NDArray[Any],
    scores: npt.NDArray[Any],
    classes: npt.NDArray[Any],
    meta: DecodeMeta,
) -> list[Detection]:
    if scores.size > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        xywh, scores, classes = xywh[top], scores[top], classes[top]
    boxes = _xywh_to_xyxy(xywh)
    keep = batched_nms(boxes, scores, classes, meta.iou_threshold, meta.max_detections)
    return boxes_to_detections(boxes[keep], scores[keep], classes[keep], meta)


def _single_batch(output: npt.NDArray[Any], kind: str) -> npt.NDArray[Any]:
    arr = np.asarray(output)
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise BackendError(f"{kind} output has batch {arr.shape[0]}; one picture expected")
        arr = arr[0]
    if arr.ndim != 2:
        raise BackendError(f"{kind} output has shape {np.shape(output)}; expected 2 or 3 dims")
    return arr


def decode_yolov8(output: npt.NDArray[Any], meta: DecodeMeta) -> list[Detection]:
    """Decode an Ultralytics YOLOv8/11 ``[1, 4 + nc, N]`` output (pure function)."""
    pred = _single_batch(output, "YOLOv8")
    nc = len(meta.class_names)
    # A few exporters write [N, 4 + nc]; with the class count known the two cannot be confused.
    if nc and pred.shape[0] != 4 + nc and pred.shape[1] == 4 + nc:
        pred = pred.T
    if pred.shape[0] < 5 or (nc and pred.shape[0] != 4 + nc):
        raise BackendError(
            f"YOLOv8 output has shape {np.shape(output)}; expected [1, 4 + {nc or 'nc'}, N]"
        )
    class_scores = pred[4:]
    best = class_scores.max(axis=0)
    keep = np.nonzero(best > meta.score_threshold)[0]
    if keep.size == 0:
        return []
    classes = class_scores[:, keep].argmax(axis=0)
    return _finish(pred[:4, keep].T, best[keep].astype(np.float64), classes, meta)


def decode_yolov5(output: npt.NDArray[Any], meta: DecodeMeta) -> list[Detection]:
    """Decode a YOLOv5 ``[1, N, 5 + nc]`` output (pure function)."""
    pred = _single_batch(output, "YOLOv5")
    nc = len(meta.class_names)
    if pred.shape[1] < 6 or (nc and pred.shape[1] != 5 + nc):
        raise BackendError(
            f"YOLOv5 output has shape {np.shape(output)}; expected [1, N, 5 + {nc or 'nc'}]"
        )
    thr = meta.score_threshold
    # As in YOLOv5's NMS: objectness first, then objectness × best class score.
    cand = pred[pred[:, 4] > thr]
    if cand.shape[0] == 0:
        return []
    scores = cand[:, 5:].astype(np.float64) * cand[:, 4:5].astype(np.float64)
    classes = scores.argmax(axis=1)
    best = scores[np.arange(len(classes)), classes]
    keep = best > thr
    if not keep.any():
        return []
    return _finish(cand[keep, :4], best[keep], classes[keep], meta)


class YoloDetector(SessionDetector):
    """A YOLOv5 or YOLOv8 export behind one onnxruntime session."""

    def __init__(
        self,
        session: Any,
        kind: str,
        class_names: tuple[str, ...],
        input_hw: tuple[int, int] = DEFAULT_YOLO_INPUT_HW,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
    ) -> None:
        if kind not in ("yolov5", "yolov8"):
            raise ValueError(f"unknown YOLO kind {kind!r}")
        super().__init__(session, kind, class_names, input_hw, score_threshold, iou_threshold)
        self._decode = decode_yolov8 if kind == "yolov8" else decode_yolov5

    def detect(self, image: Image.Image) -> list[Detection]:
        tensor, transform = preprocess_yolo(image, self.input_hw)
        return self._decode(self._infer(tensor)[0], self._meta(transform))
