"""Service times learnt per (task type, device type), seeded from the board profiles."""

from __future__ import annotations

from edgesched.boards import MEDIAN_MS

DEFAULT_MS = 100.0
ALPHA = 0.2  #: weight of a new observation in the moving average


class ServiceTimes:
    def __init__(self) -> None:
        self._ewma: dict[tuple[str, str], float] = {}

    def observe(self, task_type: str, device_type: str, service_ms: float) -> None:
        if not service_ms > 0:
            return
        key = (task_type, device_type)
        old = self._ewma.get(key)
        self._ewma[key] = service_ms if old is None else (1 - ALPHA) * old + ALPHA * service_ms

    def estimate(self, task_type: str, device_type: str, time_scale: float = 1.0) -> float:
        """The learnt average, else the profile's median (times the emulation's scale)."""
        learnt = self._ewma.get((task_type, device_type))
        if learnt is not None:
            return learnt
        return MEDIAN_MS.get(device_type, DEFAULT_MS) * time_scale

    def measured(self, task_type: str, device_type: str) -> bool:
        return (task_type, device_type) in self._ewma
