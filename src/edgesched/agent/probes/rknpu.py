"""Rockchip RK3588 (and other RKNPU2 chips) through the vendor driver's debugfs (devices.md §2).

The NPU has no memory of its own (it allocates from system DRAM) and most boards have no power
sensor, so those fields come from /proc/meminfo or stay None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgesched.agent.probes.base import Probe, Sample, fraction, mean
from edgesched.agent.probes.env import ProbeEnv
from edgesched.agent.probes.sysfs import compatible, meminfo_mb, thermal_zone_c

#: debugfs first; kernels with CONFIG_ROCKCHIP_RKNPU_PROC_FS mirror it under /proc/rknpu/
LOAD_PATHS = ("/sys/kernel/debug/rknpu/load", "/proc/rknpu/load")
VERSION_PATHS = ("/sys/kernel/debug/rknpu/version", "/proc/rknpu/version")
DEVFREQ_GLOB = "/sys/class/devfreq/*.npu"
RKNPU_SOCS = ("rk3588", "rk3588s", "rk3576", "rk3568", "rk3566", "rk3562")

_CORE = re.compile(r"(?:Core|NPU)(\d+):\s*(-?\d*)\s*%")
_SINGLE = re.compile(r"NPU load:\s*(-?\d*)\s*%")


@dataclass(frozen=True)
class RknpuLoad:
    """Per-core busy % over the driver's 1 s window; None marks a garbage value."""

    cores: tuple[float | None, ...]

    @property
    def valid(self) -> bool:
        return bool(self.cores) and all(c is not None for c in self.cores)

    @property
    def util_pct(self) -> float | None:
        # One garbage core (429496%, "over 20000%" after a hung job) discredits the whole
        # line: the driver's counters are broken, so the other cores are not trusted either.
        return mean(self.cores) if self.valid else None


def _core_pct(text: str) -> float | None:
    if text == "":
        # printf("%2.d", 0) prints no digits: a blank value is a zero, not a missing one
        return 0.0
    value = float(text)
    return value if 0.0 <= value <= 100.0 else None  # reject, never clamp


def parse_rknpu_load(text: str) -> RknpuLoad:
    """``NPU load:  Core0: 12%, Core1:  3%, Core2:  0%,`` or single-core ``NPU load:  0%``.

    Also accepts the old ``NPU0: 100%, NPU1: 98%`` form. Unrecognised text gives no cores.
    """
    found = _CORE.findall(text)
    if found:
        by_core = {int(index): _core_pct(value) for index, value in found}
        return RknpuLoad(cores=tuple(by_core[i] for i in sorted(by_core)))
    match = _SINGLE.search(text)
    if match:
        return RknpuLoad(cores=(_core_pct(match.group(1)),))
    return RknpuLoad(cores=())


def parse_devfreq_load(text: str) -> tuple[float | None, int | None]:
    """devfreq ``load``: ``37@1000000000Hz`` → (busy %, frequency Hz); garbage → None."""
    match = re.match(r"\s*(\d+)\s*@\s*(\d+)\s*Hz", text)
    if not match:
        return None, None
    pct = float(match.group(1))
    return (pct if pct <= 100.0 else None), int(match.group(2))


def parse_driver_version(text: str) -> str | None:
    """``RKNPU driver: v0.9.8`` → ``0.9.8``."""
    match = re.search(r"v?(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


class RknpuProbe(Probe):
    name = "rknpu"
    min_interval_s = 1.0  # the driver's load window is 1000 ms
    needs_root = True  # debugfs

    def __init__(self, env: ProbeEnv) -> None:
        super().__init__(env)
        self._cores: int | None = None

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        if any(env.exists(p) for p in LOAD_PATHS):
            return True
        if any(c.split(",")[-1] in RKNPU_SOCS for c in compatible(env)):
            return True
        return bool(env.glob(DEVFREQ_GLOB))

    def static_info(self) -> dict[str, Any]:
        info = super().static_info()
        socs = [c.split(",")[-1] for c in compatible(self.env) if c.startswith("rockchip,")]
        info["soc"] = next((s for s in socs if s in RKNPU_SOCS), socs[0] if socs else None)
        for path in VERSION_PATHS:
            text = self.env.read_optional(path)
            if text:
                info["driver"] = parse_driver_version(text)
                break
        if self._cores is not None:
            info["cores"] = self._cores
        for devfreq in self.env.glob(DEVFREQ_GLOB):
            governor = self.env.read_optional(devfreq + "/governor")
            freq = self.env.read_optional(devfreq + "/cur_freq")
            # latency swings with the governor (§2.2): worth showing next to the load
            info["npu_governor"] = governor.strip() if governor else None
            info["npu_freq_hz"] = int(freq) if freq and freq.strip().isdigit() else None
            break
        return info

    def _read_load(self) -> tuple[RknpuLoad | None, str | None]:
        problem = None
        for path in LOAD_PATHS:
            try:
                text = self.env.read_text(path)
            except PermissionError:
                problem = f"{path}: permission denied (needs root and a mounted debugfs)"
                continue
            except OSError:
                continue
            return parse_rknpu_load(text), None
        return None, problem or "no rknpu load file (mainline 'rocket' driver or no debugfs)"

    def _devfreq_pct(self) -> float | None:
        for devfreq in self.env.glob(DEVFREQ_GLOB):
            text = self.env.read_optional(devfreq + "/load")
            if text:
                return parse_devfreq_load(text)[0]
        return None

    def sample(self) -> Sample:
        load, problem = self._read_load()
        per_unit: tuple[float | None, ...] | None = None
        util: float | None = None
        if load is not None and load.cores:
            self._cores = len(load.cores)
            per_unit = tuple(fraction(c) for c in load.cores)
            util = fraction(load.util_pct)
            if not load.valid:
                problem = "rknpu load reported an impossible value (> 100%)"
        elif load is not None:
            problem = "rknpu load: unrecognised format"
        if load is None or not load.cores:
            # coarser and global, but world-readable: better than nothing without root
            util = fraction(self._devfreq_pct())
        self.degraded_reason = problem
        used, total_mb = meminfo_mb(self.env)
        return Sample(
            xpu_util=util,
            xpu_mem_used_mb=used,  # shared system DRAM (§2.2)
            xpu_mem_total_mb=total_mb,
            # the SoC zone is the next best sensor when a kernel has no npu zone
            temperature_c=thermal_zone_c(self.env, ("npu-thermal", "soc-thermal")),
            power_w=None,  # RK806 PMIC exposes no power telemetry
            per_unit=per_unit,
            source=self.name,
        )
