"""Coordinates shared by every decoder: from model-input pixels back to the original picture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgesched.errors import BackendError
from edgesched.inference.labels import Detection

__all__ = ["DecodeMeta", "InputTransform", "boxes_to_detections"]


@dataclass(frozen=True)
class InputTransform:
    """How the original picture became the model input: ``input = original * scale + pad``.

    A plain resize has different x and y scales and no pad; a letterbox has one scale and a pad.
    """

    orig_width: int
    orig_height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_original(self, boxes: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
        """Map ``[N, 4]`` x1,y1,x2,y2 boxes in input pixels to original pixels (not clipped)."""
        out: npt.NDArray[np.floating[Any]] = np.asarray(boxes, dtype=np.float64).copy()
        out[:, 0::2] = (out[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.pad_y) / self.scale_y
        return out

    def to_input(self, boxes: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
        """The inverse of :meth:`to_original` (used by tests and by drawing code)."""
        out: npt.NDArray[np.floating[Any]] = np.asarray(boxes, dtype=np.float64).copy()
        out[:, 0::2] = out[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale_y + self.pad_y
        return out


@dataclass(frozen=True)
class DecodeMeta:
    """Everything a pure decode function needs besides the raw model output."""

    transform: InputTransform
    class_names: tuple[str, ...] = ()
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    max_detections: int = 300


def boxes_to_detections(
    boxes: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
    class_ids: npt.NDArray[np.integer[Any]],
    meta: DecodeMeta,
) -> list[Detection]:
    """Map input-pixel boxes to the original picture, round, clip and name them.

    The result is in descending confidence; boxes that become empty after clipping (entirely in
    the letterbox pad, say) are dropped because they cover no pixel of the picture.
    """
    if len(boxes) == 0:
        return []
    width, height = meta.transform.orig_width, meta.transform.orig_height
    mapped = np.rint(meta.transform.to_original(boxes))
    mapped[:, 0::2] = np.clip(mapped[:, 0::2], 0, width)
    mapped[:, 1::2] = np.clip(mapped[:, 1::2], 0, height)
    coords = mapped.astype(np.int64).tolist()
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    names = meta.class_names
    dets: list[Detection] = []
    for i in order.tolist():
        x1, y1, x2, y2 = coords[i]
        if x2 <= x1 or y2 <= y1:
            continue
        cid = int(class_ids[i])
        dets.append(
            Detection(
                class_id=cid,
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                confidence=float(scores[i]),
                class_name=names[cid] if 0 <= cid < len(names) else "",
            )
        )
    return dets


class SessionDetector:
    """What every detector shares: one inference session with one input, and thresholds.

    Subclasses preprocess and decode; running the session and building the decode metadata is
    here once.
    """

    def __init__(
        self,
        session: Any,
        task_kind: str,
        class_names: tuple[str, ...],
        input_hw: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> None:
        self.task_kind = task_kind
        self.class_names = class_names
        self.input_hw = input_hw
        self._session = session
        self._input_name: str = session.get_inputs()[0].name
        self._score_threshold = score_threshold
        self._iou_threshold = iou_threshold

    def _infer(self, tensor: Any) -> list[Any]:
        try:
            outputs: list[Any] = self._session.run(None, {self._input_name: tensor})
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise BackendError(f"{self.task_kind} model failed: {exc}") from exc
        return outputs

    def _meta(self, transform: InputTransform) -> DecodeMeta:
        return DecodeMeta(
            transform=transform,
            class_names=self.class_names,
            score_threshold=self._score_threshold,
            iou_threshold=self._iou_threshold,
        )
