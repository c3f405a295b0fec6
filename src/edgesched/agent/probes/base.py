"""The probe contract: one ``Sample`` record, one ``Probe`` base class (devices.md §8.1).

Every numeric field is Optional on purpose: None means "this platform cannot tell", which the
scheduler must treat differently from a measured 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from edgesched.agent.probes.env import ProbeEnv, ProbeError

__all__ = ["METRIC_FIELDS", "Probe", "ProbeEnv", "ProbeError", "Sample", "merge_samples"]

#: The fields of ``Sample`` that hold a metric; ``source`` only labels who produced them.
METRIC_FIELDS = (
    "cpu",
    "memory",
    "xpu_util",
    "xpu_mem_used_mb",
    "xpu_mem_total_mb",
    "temperature_c",
    "power_w",
    "per_unit",
)


@dataclass(frozen=True)
class Sample:
    """One reading. Fractions are 0..1; memory in MB (MiB where the tool says MiB)."""

    cpu: float | None = None  #: host CPU busy, fraction of all cores
    memory: float | None = None  #: host RAM in use, fraction
    xpu_util: float | None = None  #: accelerator busy, fraction (mean over units)
    xpu_mem_used_mb: float | None = None
    xpu_mem_total_mb: float | None = None
    temperature_c: float | None = None  #: hottest accelerator sensor
    power_w: float | None = None  #: accelerator or board power
    per_unit: tuple[float | None, ...] | None = None  #: per NPU core / chip / GPU busy fraction
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.per_unit is not None:
            data["per_unit"] = list(self.per_unit)
        return data

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in METRIC_FIELDS)


def merge_samples(samples: list[Sample]) -> tuple[Sample, dict[str, str]]:
    """Field by field, the first non-None value wins; also says which source gave each field."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for sample in samples:
        for name in METRIC_FIELDS:
            value = getattr(sample, name)
            if value is not None and name not in values:
                values[name] = value
                origins[name] = sample.source
    used: list[str] = []
    for sample in samples:
        if sample.source in origins.values() and sample.source not in used:
            used.append(sample.source)
    return Sample(source="+".join(used), **values), origins


def fraction(value: float | None, scale: float = 100.0) -> float | None:
    """A percentage (or per-mille with scale=1000) as a fraction; out of range means garbage."""
    if value is None or math.isnan(value) or value < 0 or value > scale:
        return None
    return value / scale


def mean(values: list[float | None] | tuple[float | None, ...]) -> float | None:
    """The mean of the known values; None when nothing is known."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def total(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class Probe(ABC):
    """One board family. Built from an injectable ``ProbeEnv`` so tests can fake the machine."""

    name: ClassVar[str]
    #: the collector never samples more often than this (the source's own refresh window)
    min_interval_s: float = 1.0
    #: whether the usual source needs root (reported, not enforced)
    needs_root: ClassVar[bool] = False

    def __init__(self, env: ProbeEnv) -> None:
        self.env = env
        #: set by a probe that answers but knows part of its data is missing, and why
        #: (permission denied on debugfs, garbage from the driver); the collector reports it
        self.degraded_reason: str | None = None

    @classmethod
    @abstractmethod
    def detect(cls, env: ProbeEnv) -> bool:
        """Cheap and side-effect free: checks paths and executables, never runs anything."""

    def static_info(self) -> dict[str, Any]:
        """What does not change: SoC string, driver versions. Never blocks (no subprocess)."""
        return {
            "kind": self.name,
            "needs_root": self.needs_root,
            "min_interval_s": self.min_interval_s,
            "degraded": self.degraded_reason,
        }

    @abstractmethod
    def sample(self) -> Sample:
        """One reading; may block up to the probe's own timeout. Raises ProbeError."""

    def close(self) -> None:  # noqa: B027 - most probes hold nothing: closing is optional
        """Releases long-lived resources (child processes, library handles)."""
