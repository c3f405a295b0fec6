"""Board emulation: report a board's kind and slots, and pace service times to its speed.

Figures come from published measurements (shared reference ``devices.md`` §7, batch 1,
end to end in a Python worker). Pacing can only add delay; the real model on two shared cores is
slower than any of these boards, so times are stretched by ``--time-scale`` (relative speeds stay
true). XPU utilisation is derived from slot occupancy.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

from edgesched.boards import ALIASES, ATLAS310, HARDWARE_SLOTS, MEDIAN_MS, ORIN, P95_MS, RK3588
from edgesched.errors import UnknownPluginError


@dataclass(frozen=True)
class SubDeviceSpec:
    name: str
    kind: str
    slots: int


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    sub_devices: tuple[SubDeviceSpec, ...]
    median_ms: float  #: service time per task on one slot
    p95_ms: float
    formats: tuple[str, ...]  #: native model formats, best first
    source: str
    idle_w: float = float("nan")  #: board power when idle (unverified estimates, see docs)
    busy_w: float = float("nan")  #: board power with every slot busy

    def power_w(self, xpu: float) -> float:
        """The power the utilisation implies: linear between idle and busy."""
        return self.idle_w + (self.busy_w - self.idle_w) * min(1.0, max(0.0, xpu))

    @property
    def slots(self) -> int:
        return sum(s.slots for s in self.sub_devices)

    @property
    def sigma(self) -> float:
        """Lognormal shape from the median and the 95th percentile."""
        return math.log(self.p95_ms / self.median_ms) / 1.6449

    def sample_ms(self, rng: random.Random) -> float:
        return self.median_ms * math.exp(rng.gauss(0.0, self.sigma))


PROFILES: dict[str, Profile] = {
    ATLAS310: Profile(
        name=ATLAS310,
        description="Huawei Atlas 310 class (Atlas 200 DK), one Ascend 310 chip",
        sub_devices=(SubDeviceSpec("chip0", "npu", 1),),
        median_ms=MEDIAN_MS[ATLAS310],
        p95_ms=P95_MS[ATLAS310],
        formats=("om", "onnx"),
        source="devices.md §7: Atlas 200 DK YOLOv5s ~20-50 ms; simulator median ~25, p95 ~50",
        idle_w=3.0,
        busy_w=8.0,  # Ascend 310: 8 W TDP
    ),
    RK3588: Profile(
        name=RK3588,
        description="Rockchip RK3588, three NPU cores, one RKNNLite runtime per core",
        sub_devices=tuple(
            SubDeviceSpec(f"npu{core}", "npu", 1) for core in range(HARDWARE_SLOTS[RK3588])
        ),
        median_ms=MEDIAN_MS[RK3588],
        p95_ms=P95_MS[RK3588],
        formats=("rknn", "onnx"),
        source="devices.md §7: Python RKNNLite.inference 40.9 ms mean (YOLOv5s INT8, one core)",
        idle_w=2.5,
        busy_w=7.0,  # RK3588 board with the NPU busy (unverified)
    ),
    ORIN: Profile(
        name=ORIN,
        description="NVIDIA Jetson AGX Orin, GPU with TensorRT FP16",
        sub_devices=(SubDeviceSpec("gpu0", "gpu", 1),),
        median_ms=MEDIAN_MS[ORIN],
        p95_ms=P95_MS[ORIN],
        formats=("engine", "onnx"),
        source="devices.md §7: AGX Orin YOLOv10n 4.1 ms e2e (trtutils), 6.9 ms (Ultralytics); "
        "simulator median ~5 ms",
        idle_w=12.0,
        busy_w=40.0,  # AGX Orin module power modes 15-60 W (unverified)
    ),
}


def get_profile(name: str) -> Profile:
    key = ALIASES.get(name, name.lower())
    if key not in PROFILES:
        raise UnknownPluginError("emulation profile", name, [*PROFILES, *ALIASES])
    return PROFILES[key]


@dataclass(frozen=True)
class SlowWindow:
    """A straggler, emulated: service times multiplied by ``factor`` for ``for_s`` seconds from
    ``after_s`` seconds after ``origin`` (the agent's start, monotonic) — a board throttling
    when hot, an NPU shared with another process. Emulation only: benchmarks slow one board of
    a cluster for a window (``edgesched bench straggler``); a task takes the factor in force when
    it starts its slot."""

    factor: float = 1.0
    after_s: float = 0.0
    for_s: float = 0.0
    origin: float = 0.0

    @property
    def active(self) -> bool:
        return self.factor != 1.0 and self.for_s > 0

    def factor_at(self, now: float) -> float:
        """The factor for a task starting at ``now`` (monotonic seconds)."""
        if not self.active:
            return 1.0
        since = now - self.origin
        return self.factor if self.after_s <= since < self.after_s + self.for_s else 1.0


def slow_window(factor: float, after_s: float, for_s: float, origin: float) -> Optional[SlowWindow]:  # noqa: UP045 - runs on Python 3.9
    """The window the settings ask for; None when they ask for none."""
    window = SlowWindow(factor, after_s, for_s, origin)
    return window if window.active else None


class SlotMeter:
    """Integrates how many slots were busy, so utilisation covers the whole interval."""

    def __init__(self, slots: int, now: float) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self._since = now
        self._last = now
        self._area = 0.0

    def _advance(self, now: float) -> None:
        self._area += self.busy * max(0.0, now - self._last)
        self._last = now

    def start(self, now: float) -> None:
        self._advance(now)
        self.busy += 1

    def stop(self, now: float) -> None:
        self._advance(now)
        self.busy = max(0, self.busy - 1)

    def utilisation(self, now: float) -> float:
        """Mean busy fraction since the previous call."""
        self._advance(now)
        span = now - self._since
        value = self._area / (self.slots * span) if span > 0 else self.busy / self.slots
        self._since = now
        self._area = 0.0
        return min(1.0, max(0.0, value))
