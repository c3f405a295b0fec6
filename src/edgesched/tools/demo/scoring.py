"""Score detections against the ground truth of generated pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgesched.inference.labels import Detection
from edgesched.tools.demo.pages import Region

__all__ = ["MATCH_IOU", "iou", "match_page", "score"]

MATCH_IOU = 0.5
BoxLike = Sequence[float]


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes; 0 when either is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area_a + area_b - inter))


def match_page(regions: Sequence[Region], detections: Sequence[Detection]) -> list[bool]:
    """For each region, whether a detection of the same class overlaps it with IoU ≥ 0.5.

    Greedy by IoU over all (region, detection) pairs: the best-overlapping pair is matched
    first, and each region and each detection is used at most once.
    """
    pairs: list[tuple[float, int, int]] = []
    for ri, region in enumerate(regions):
        for di, det in enumerate(detections):
            if det.class_name != region.class_name:
                continue
            overlap = iou(region.box, (det.x1, det.y1, det.x2, det.y2))
            if overlap >= MATCH_IOU:
                pairs.append((overlap, ri, di))
    # Highest IoU first; ties broken by position so the result never depends on dict order.
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    found = [False] * len(regions)
    used: set[int] = set()
    for _, ri, di in pairs:
        if found[ri] or di in used:
            continue
        found[ri] = True
        used.add(di)
    return found


def score(
    ground_truth: Mapping[str, Sequence[Region]],
    detections: Mapping[str, Sequence[Detection]],
) -> float:
    """Fraction of all drawn regions that were found (recall); pages without results find none.

    Returns 1.0 when the ground truth has no region at all (nothing to miss).
    """
    total = 0
    hits = 0
    for name, regions in ground_truth.items():
        found = match_page(regions, detections.get(name, ()))
        total += len(found)
        hits += sum(found)
    return hits / total if total else 1.0
