"""The generic probe, last in every chain: host CPU and RAM from psutil, no accelerator fields.

psutil reads this machine even under a ``--sysroot``: a fake root fakes the board's
accelerator, not the interpreter's host.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from edgesched.agent.probes.base import Probe, Sample
from edgesched.agent.probes.env import ProbeEnv

#: cpu_percent(interval=None) measures since the previous call: shorter windows are noise
_MIN_CPU_WINDOW_S = 0.2


class GenericProbe(Probe):
    name = "generic"
    min_interval_s = 0.5
    needs_root = False

    def __init__(self, env: ProbeEnv) -> None:
        super().__init__(env)
        psutil.cpu_percent(interval=None)  # primes the counter: the first reading is since now
        self._primed_at = time.monotonic()

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        return True

    def static_info(self) -> dict[str, Any]:
        return {
            **super().static_info(),
            "cpu_count": psutil.cpu_count(),
            "memory_total_mb": round(psutil.virtual_memory().total / 2**20, 1),
        }

    def sample(self) -> Sample:
        wait = _MIN_CPU_WINDOW_S - (time.monotonic() - self._primed_at)
        if wait > 0:
            time.sleep(wait)  # only before the first reading; sample() runs in a worker thread
        cpu = psutil.cpu_percent(interval=None) / 100.0
        memory = psutil.virtual_memory().percent / 100.0
        return Sample(
            cpu=min(1.0, max(0.0, cpu)),
            memory=min(1.0, max(0.0, memory)),
            source=self.name,
        )
