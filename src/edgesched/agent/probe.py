"""The generic probe: CPU and memory from psutil. Works on every board."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass
class HostSample:
    cpu: float  #: fraction of all cores, since the previous sample
    memory: float  #: fraction of memory in use


class PsutilProbe:
    name = "psutil"
    min_interval_s = 0.5

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # primes the counter; the first reading is since now

    def sample(self) -> HostSample:
        cpu = psutil.cpu_percent(interval=None) / 100.0
        memory = psutil.virtual_memory().percent / 100.0
        return HostSample(cpu=min(1.0, max(0.0, cpu)), memory=min(1.0, max(0.0, memory)))
