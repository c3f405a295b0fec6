"""Detections and board timings ⇄ protobuf (``common.proto``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from edgesched.inference.labels import Detection
from edgesched.v1 import common_pb2

__all__ = [
    "BOARD_FIELDS",
    "board_timings_from_pb",
    "board_timings_pb",
    "detection_from_pb",
    "detection_pb",
]

#: the board's share of a task's timings, in ``BoardTimings``' field order
BOARD_FIELDS = (
    "receive_ms",
    "queue_ms",
    "decode_ms",
    "inference_ms",
    "postprocess_ms",
    "paced_ms",
    "total_ms",
)


def detection_pb(d: Detection) -> common_pb2.Detection:
    return common_pb2.Detection(
        class_id=d.class_id,
        class_name=d.class_name,
        x1=d.x1,
        y1=d.y1,
        x2=d.x2,
        y2=d.y2,
        confidence=d.confidence,
    )


def detection_from_pb(d: common_pb2.Detection, name_limit: int = 0) -> Detection:
    """A detection as received: a non-finite confidence reads 0, confidences keep 6 decimals,
    and a class name beyond ``name_limit`` characters (0: no limit) is cut and marked."""
    name = d.class_name
    if name_limit and len(name) > name_limit:
        name = name[: name_limit - 1] + "…"
    confidence = round(d.confidence, 6) if math.isfinite(d.confidence) else 0.0
    return Detection(d.class_id, d.x1, d.y1, d.x2, d.y2, confidence, name)


def board_timings_pb(timings: Mapping[str, float]) -> common_pb2.BoardTimings:
    return common_pb2.BoardTimings(**{k: float(timings.get(k, 0.0)) for k in BOARD_FIELDS})


def board_timings_from_pb(timings: common_pb2.BoardTimings, max_ms: float) -> dict[str, float]:
    """The figures the board set, those outside [0, max_ms] left out as faulty reports."""
    return {f.name: v for f, v in timings.ListFields() if 0.0 <= v <= max_ms}
