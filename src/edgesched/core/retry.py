"""Retry policy: which failures count, and capped exponential backoff with full jitter."""

from __future__ import annotations

import random

from edgesched.kinds import FailureKind

#: Failures of the task itself; they count against max_attempts. Everything else (device lost,
#: link broken, the agent refusing because it is full or draining) is the infrastructure's.
COUNTED_KINDS = frozenset({FailureKind.BAD_INPUT, FailureKind.BACKEND})

#: Failures that can never succeed elsewhere: the task is dead at once.
FATAL_KINDS = frozenset({FailureKind.BAD_INPUT})


def backoff_delay(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter (AWS style): uniform in [0, min(cap, base · 2^(failures-1))]."""
    if failures <= 0 or base_s <= 0:
        return 0.0
    ceiling = min(cap_s, base_s * 2.0 ** min(failures - 1, 60))  # no overflow for huge counts
    return rng.uniform(0.0, ceiling)
