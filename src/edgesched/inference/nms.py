"""Greedy hard non-maximum suppression in numpy (no OpenCV on the boards)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["batched_nms", "box_iou", "nms"]

_EPS = 1e-9


def box_iou(box: npt.ArrayLike, others: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """IoU of one x1,y1,x2,y2 box against ``[N, 4]`` boxes (areas without the +1 of old code)."""
    b = np.asarray(box, dtype=np.float64)
    o = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(b[2], o[:, 2]) - np.maximum(b[0], o[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(b[3], o[:, 3]) - np.maximum(b[1], o[:, 1]), 0.0, None)
    inter = iw * ih
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    area_o = np.clip(o[:, 2] - o[:, 0], 0.0, None) * np.clip(o[:, 3] - o[:, 1], 0.0, None)
    result: npt.NDArray[np.float64] = inter / (area_b + area_o - inter + _EPS)
    return result


def nms(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    iou_threshold: float,
    max_keep: int | None = None,
) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept, best score first.

    A box is suppressed when its IoU with a kept, better-scoring box is above ``iou_threshold``.
    Each round is vectorised over the remaining boxes, so the cost is O(kept × candidates).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    # Stable sort: equal scores keep their input order, so results are reproducible.
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        order = rest[box_iou(b[best], b[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def batched_nms(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    class_ids: npt.ArrayLike,
    iou_threshold: float,
    max_keep: int | None = None,
) -> npt.NDArray[np.intp]:
    """Per-class NMS in one pass: boxes of each class are shifted so classes never overlap."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    c = np.asarray(class_ids, dtype=np.float64).reshape(-1, 1)
    # The shift is one more than the whole coordinate span, so two classes cannot touch.
    span = float(b.max() - b.min()) + 1.0
    return nms(b + c * span, scores, iou_threshold, max_keep)
