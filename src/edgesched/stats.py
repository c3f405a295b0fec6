"""Percentiles, the one way every figure in edgesched is computed (the client's report, the
dashboard, the demo and the benchmarks). Imports nothing beyond the standard library, so the
board's side (the client) may use it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

Method = Literal["inclusive", "nearest_rank"]


def percentile(values: Sequence[float], q: float, method: Method = "inclusive") -> float:
    """The ``q``-th percentile of ``values``; NaN for no values.

    ``inclusive`` interpolates between the two nearest values (``statistics.quantiles`` with
    ``method="inclusive"``; ``q`` an integer in 1..99), as the client's and the demo's reports
    always have. ``nearest_rank`` is the smallest value with at least ``q`` percent of the values
    at or below it (``q`` in [0, 100]), as the scale benchmark always has: always one of the
    values, never between two.
    """
    if not values:
        return math.nan
    if method == "nearest_rank":
        ordered = sorted(values)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
