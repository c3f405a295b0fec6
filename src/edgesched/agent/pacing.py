"""Link pacing: make the agent's link as slow as a real edge uplink, for tests and demos.

The agent reads each payload chunk, then waits as long as the chunk would take at the target
rate before reading on — so the transfer really takes that long, the bandwidth it measures from
real transfers really moves, and (as on a slow link) frames behind a payload wait too.
"""

from __future__ import annotations

import random
from typing import Optional

#: the seed's --bandwidth-fluctuate draws uniformly from this range (Mbit/s)
SEED_RANGE_MBPS = (50.0, 500.0)


class BandwidthTrace:
    """A seeded, repeatable, piecewise-constant bandwidth trace."""

    def __init__(
        self,
        seed: int,
        step_s: float,
        low: float = SEED_RANGE_MBPS[0],
        high: float = SEED_RANGE_MBPS[1],
    ) -> None:
        rng = random.Random(seed)
        self.step_s = step_s
        self.values = [rng.uniform(low, high) for _ in range(256)]

    def rate_mbps(self, t: float) -> float:
        return self.values[int(t / self.step_s) % len(self.values)]


class Pacer:
    """Delays each payload as a link of ``limit_mbps`` (or the trace's bandwidth) would.

    Owns only its limit and trace; it may not read or hold the payloads: the session sleeps for
    what it returns."""

    def __init__(self, limit_mbps: float = 0.0, trace: Optional[BandwidthTrace] = None) -> None:  # noqa: UP045
        self.limit_mbps = limit_mbps
        self.trace = trace

    @property
    def active(self) -> bool:
        return self.limit_mbps > 0 or self.trace is not None

    def rate_mbps(self, t: float) -> float:
        rates = [r for r in (self.limit_mbps, self.trace.rate_mbps(t) if self.trace else 0) if r]
        return min(rates) if rates else float("inf")

    def delay_s(self, nbytes: int, t: float) -> float:
        """How long ``nbytes`` take at the rate in force at ``t``."""
        rate = self.rate_mbps(t)
        return nbytes * 8 / (rate * 1e6) if rate != float("inf") else 0.0
