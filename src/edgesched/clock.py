"""Time, injected: components take a Clock so tests move time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, for durations and timeouts."""
        ...

    def wall_ms(self) -> int:
        """Unix milliseconds, for what is stored and shown."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0, wall_ms: int = 1_700_000_000_000) -> None:
        self.now = start
        self._wall0 = wall_ms
        self._start = start

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return self._wall0 + int((self.now - self._start) * 1000)

    def advance(self, seconds: float) -> None:
        self.now += seconds
