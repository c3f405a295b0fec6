"""The gates the scale benchmark checks, what it knows of the fleet it simulates, and how
its figures are computed and rounded."""

from __future__ import annotations

import math

from edgesched.boards import ATLAS310, CPU, ORIN, RK3588

#: the gates this scenario checks
CPU_TARGET_PERCENT = 25.0  #: of one core, 1,000 agents at the default 2 s heartbeat
DECISION_TARGET_MS = 1.0  #: p99 of one placement decision with 1,000 devices
STRATEGY_NAMES = ("roundrobin", "load", "ect")
#: board mix of the simulated fleet: (device type, share)
FLEET_MIX = ((RK3588, 0.4), (ATLAS310, 0.25), (ORIN, 0.15), (CPU, 0.2))
#: what a real agent on such a board reports: (native format, backend, probe)
BOARD = {
    RK3588: ("rknn", "rknn", "rknpu"),
    ATLAS310: ("om", "ais_bench", "ascend"),
    ORIN: ("engine", "tensorrt", "jetson"),
    CPU: ("onnx", "onnx", "generic"),
}
TASK_TYPES = ("layout", "echo")
#: gRPC's 5-byte message prefix + the 9-byte HTTP/2 DATA frame header, per message
FRAMING_BYTES = 14


# ---- figures -------------------------------------------------------------------------------


def histogram_quantile(buckets: dict[float, float], q: float) -> tuple[float, float]:
    """(estimate, bucket upper bound) of quantile ``q`` in [0, 1] of cumulative ``buckets``
    (upper bound → count), interpolating linearly inside the bucket like Prometheus does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan, math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower, upper
            inside = count - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (upper - lower) * share, upper
        lower, below = upper, count
    return lower, math.inf


def rounded(value: float, digits: int = 3) -> float | None:
    return None if not math.isfinite(value) else round(value, digits)
