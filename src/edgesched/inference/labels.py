"""Detections and the seed's label-file format.

One detection a line, ``class_id x1 y1 x2 y2 conf``, space separated, each number printed like C
``%g``, lines in ascending confidence order, an empty file when nothing was found. Coordinates are
pixels of the original image; the seed writes them as integers after rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgesched.errors import BadInputError

__all__ = ["Detection", "format_label", "parse_label"]


@dataclass(frozen=True)
class Detection:
    """One box in pixel coordinates of the original image (x2, y2 exclusive, clipped)."""

    class_id: int
    x1: int
    y1: int
    x2: int
    y2: int
    confidence: float
    class_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        """As the journal's ``detections`` column and the REST API hold it (in this key order)."""
        return {
            "class_id": self.class_id,
            "class_name": self.class_name,
            "x1": self.x1,
            "y1": self.y1,
            "x2": self.x2,
            "y2": self.y2,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Detection:
        """The inverse of ``as_dict`` (raises KeyError/TypeError on a malformed entry)."""
        return cls(
            class_id=d["class_id"],
            x1=d["x1"],
            y1=d["y1"],
            x2=d["x2"],
            y2=d["y2"],
            confidence=d["confidence"],
            class_name=d.get("class_name", ""),
        )


def format_label(dets: Iterable[Detection]) -> str:
    """Render detections in the seed's label format (ascending confidence, one line each)."""
    # sorted() is stable, so equal confidences keep the detector's order: the output is
    # deterministic for a given input.
    ordered = sorted(dets, key=lambda d: d.confidence)
    # Integers are printed whole: "%g" would turn 1234567 into "1.23457e+06" and lose the pixel,
    # and below 10**6 both print the same characters, so the seed's readers see no difference.
    # format(x, "g") follows C's "%g": 6 significant digits, no trailing zeros.
    return "".join(
        f"{d.class_id:d} {d.x1:d} {d.y1:d} {d.x2:d} {d.y2:d} {d.confidence:g}\n" for d in ordered
    )


def _parse_int(token: str, what: str, lineno: int) -> int:
    try:
        value = float(token)
    except ValueError:
        raise BadInputError(f"label line {lineno}: {what} {token!r} is not a number") from None
    if not math.isfinite(value) or value != math.floor(value):
        raise BadInputError(f"label line {lineno}: {what} {token!r} is not an integer")
    return int(value)


def parse_label(text: str) -> list[Detection]:
    """Parse a label file written by :func:`format_label` (or the seed); class names stay empty.

    Blank lines are skipped. Anything else that is not six numbers raises BadInputError.
    """
    dets: list[Detection] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise BadInputError(
                f"label line {lineno}: expected 'class_id x1 y1 x2 y2 conf', got {line.strip()!r}"
            )
        class_id = _parse_int(fields[0], "class id", lineno)
        if class_id < 0:
            raise BadInputError(f"label line {lineno}: negative class id {class_id}")
        x1, y1, x2, y2 = (_parse_int(tok, "coordinate", lineno) for tok in fields[1:5])
        try:
            conf = float(fields[5])
        except ValueError:
            raise BadInputError(
                f"label line {lineno}: confidence {fields[5]!r} is not a number"
            ) from None
        if not math.isfinite(conf):
            raise BadInputError(f"label line {lineno}: confidence {fields[5]!r} is not finite")
        dets.append(Detection(class_id, x1, y1, x2, y2, conf))
    return dets
