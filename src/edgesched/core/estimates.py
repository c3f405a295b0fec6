"""Service times learnt per (task type, device type), seeded from the board profiles."""

from __future__ import annotations

import math
from collections import deque

from edgesched.boards import MEDIAN_MS

DEFAULT_MS = 100.0
ALPHA = 0.2  #: weight of a new observation in the moving average
#: recent samples kept per (task type, device type) for the p95 the straggler watch uses
WINDOW = 64


class ServiceTimes:
    def __init__(self) -> None:
        self._ewma: dict[tuple[str, str], float] = {}
        self._recent: dict[tuple[str, str], deque[float]] = {}
        #: p95 per key, worked out when asked and kept until the key's next sample
        self._p95: dict[tuple[str, str], float] = {}

    def observe(self, task_type: str, device_type: str, service_ms: float) -> None:
        if not service_ms > 0:
            return
        key = (task_type, device_type)
        old = self._ewma.get(key)
        self._ewma[key] = service_ms if old is None else (1 - ALPHA) * old + ALPHA * service_ms
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=WINDOW)
        recent.append(service_ms)
        self._p95.pop(key, None)

    def p95(self, task_type: str, device_type: str, time_scale: float = 1.0) -> float:
        """The 95th percentile of the recent samples (nearest rank), else the estimate."""
        key = (task_type, device_type)
        cached = self._p95.get(key)
        if cached is not None:
            return cached
        recent = self._recent.get(key)
        if not recent:
            return self.estimate(task_type, device_type, time_scale)
        ordered = sorted(recent)
        value = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        self._p95[key] = value
        return value

    def estimate(self, task_type: str, device_type: str, time_scale: float = 1.0) -> float:
        """The learnt average, else the profile's median (times the emulation's scale)."""
        learnt = self._ewma.get((task_type, device_type))
        if learnt is not None:
            return learnt
        return MEDIAN_MS.get(device_type, DEFAULT_MS) * time_scale

    def measured(self, task_type: str, device_type: str) -> bool:
        return (task_type, device_type) in self._ewma
