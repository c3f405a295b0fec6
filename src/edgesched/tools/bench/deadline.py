"""One deadline for a whole benchmark, and the error a benchmark ends with when it cannot
produce its figures."""

from __future__ import annotations

import time
from dataclasses import dataclass


class BenchError(Exception):
    """The benchmark could not produce its figures (a timeout, a process that died, …)."""


@dataclass
class Deadline:
    """One deadline for a whole benchmark: every wait is capped by what is left of it."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def cap(self, timeout: float, what: str) -> float:
        """``timeout`` or what is left, whichever is less; raises when nothing is left."""
        left = self.left()
        if left <= 0:
            raise BenchError(f"the benchmark's deadline passed while {what}")
        return min(timeout, left)

    def check(self, what: str) -> None:
        self.cap(1.0, what)
