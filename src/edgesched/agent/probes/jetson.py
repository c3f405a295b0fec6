"""NVIDIA Jetson (Orin Nano / NX / AGX) through sysfs and one tegrastats stream (devices.md §3).

sysfs comes first because it needs no child process: GPU load (per-mille), the ``gpu-thermal``
zone and the INA3221 rails. tegrastats adds RAM, CPU and the rails on images where hwmon is
root-only. NVML is never used here: on Tegra it answers NOT_SUPPORTED for nearly everything.
"""

from __future__ import annotations

import re
from typing import Any

from edgesched.agent.probes.base import Probe, ProbeError, Sample, fraction
from edgesched.agent.probes.env import ProbeEnv
from edgesched.agent.probes.stream import LineStream
from edgesched.agent.probes.sysfs import (
    JETSON_GPU_LOAD_GLOB,
    JETSON_GPU_LOAD_PATHS,
    device_model,
    is_tegra,
    meminfo_mb,
    thermal_zone_c,
)
from edgesched.agent.probes.tegrastats import INPUT_RAILS, TegrastatsSample, parse_tegrastats

#: the hwmon index changes between boots, so it is globbed; AGX Orin has a second chip at 0x41
INA3221_GLOBS = (
    "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label",
    "/sys/bus/i2c/drivers/ina3221x/*/hwmon/hwmon*/in*_label",
)


def parse_gpu_load(text: str) -> float | None:
    """sysfs GPU ``load`` is per-mille (0–1000): ``613`` → 0.613."""
    try:
        return fraction(float(text.strip()), scale=1000.0)
    except ValueError:
        return None


def ina3221_total_w(channels: list[tuple[str, float]]) -> float | None:
    """Board power from (rail label, mW) pairs: the input rail when present, else the sum."""
    by_label = dict(channels)
    for name in INPUT_RAILS:
        if name in by_label:
            return by_label[name] / 1000.0
    rails = [mw for label, mw in channels if label != "NC" and "sum" not in label.lower()]
    return sum(rails) / 1000.0 if rails else None


def read_ina3221(env: ProbeEnv) -> list[tuple[str, float]]:
    """(label, mW) per channel; power = mV × mA / 1000; ``sum`` channels are skipped."""
    channels: list[tuple[str, float]] = []
    for pattern in INA3221_GLOBS:
        for label_path in env.glob(pattern):
            match = re.search(r"in(\d+)_label$", label_path)
            label = (env.read_optional(label_path) or "").strip()
            if not match or not label or "sum" in label.lower():
                continue
            base = label_path[: match.start()]
            volts = env.read_optional(f"{base}in{match.group(1)}_input")
            amps = env.read_optional(f"{base}curr{match.group(1)}_input")
            try:
                if volts is not None and amps is not None:
                    channels.append((label, float(volts) * float(amps) / 1000.0))
            except ValueError:
                continue
    return channels


def jetson_soc(model: str | None) -> str | None:
    """``NVIDIA Jetson Orin Nano Developer Kit`` → ``orin-nano`` (the model artefact target)."""
    if not model:
        return None
    lowered = model.lower()
    for needle, soc in (
        ("agx orin", "agx-orin"),
        ("orin nx", "orin-nx"),
        ("orin nano", "orin-nano"),
        ("xavier nx", "xavier-nx"),
        ("agx xavier", "agx-xavier"),
        ("tx2", "tx2"),
        ("nano", "nano"),
    ):
        if needle in lowered:
            return soc
    return None


class JetsonProbe(Probe):
    name = "jetson"
    min_interval_s = 1.0  # tegrastats' default interval; the GPU load averages over it too
    needs_root = False  # tegrastats shows fewer fields without root, sysfs load is readable

    def __init__(self, env: ProbeEnv, interval_ms: int = 1000, first_line_wait_s: float = 2.0):
        super().__init__(env)
        self.interval_ms = interval_ms
        self.first_line_wait_s = first_line_wait_s
        self._stream: LineStream | None = None
        self._load_path: str | None = None

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        return is_tegra(env)

    def static_info(self) -> dict[str, Any]:
        info = super().static_info()
        model = device_model(self.env)
        release = self.env.read_optional("/etc/nv_tegra_release")
        info.update(
            model=model,
            soc=jetson_soc(model),
            l4t=release.splitlines()[0].lstrip("# ").strip() if release else None,
            gpu_load_path=self._load_path,
            tegrastats=self.env.which("tegrastats"),
        )
        return info

    def _gpu_load(self) -> float | None:
        paths = [*JETSON_GPU_LOAD_PATHS, *self.env.glob(JETSON_GPU_LOAD_GLOB)]
        for path in paths:
            text = self.env.read_optional(path)
            if text is not None:
                self._load_path = path
                return parse_gpu_load(text)
        return None

    def _tegrastats(self) -> TegrastatsSample | None:
        if self._stream is None:
            if self.env.which("tegrastats") is None:
                return None
            self._stream = LineStream(
                self.env,
                ["tegrastats", "--interval", str(self.interval_ms)],
                accept=lambda line: parse_tegrastats(line).is_sample,
            )
        stream = self._stream
        started = stream.ensure_running()
        line, age = stream.latest()
        if line is None and started:
            # the first line only comes after one interval; sample() runs in a worker thread
            stream.wait_first(self.first_line_wait_s)
            line, age = stream.latest()
        stale_s = 3 * self.interval_ms / 1000.0
        if line is None or age is None or age > stale_s:
            return None
        return parse_tegrastats(line)

    def sample(self) -> Sample:
        stats = self._tegrastats()
        util = self._gpu_load()
        if util is None and stats is not None:
            util = fraction(stats.gr3d_pct)
        temp = thermal_zone_c(self.env, ("gpu-thermal",))
        if temp is None and stats is not None:
            # "GPU@-256C" on AGX Orin: the sensor is off, the junction is the next best reading
            temp = stats.temp("gpu")
            temp = temp if temp is not None else stats.temp("tj")
        if temp is None:
            temp = thermal_zone_c(self.env, ("tj-thermal",))
        power = ina3221_total_w(read_ina3221(self.env))
        if power is None and stats is not None:
            power = stats.power_w
        if stats is not None and stats.ram_total_mb:
            used: float | None = float(stats.ram_used_mb or 0)
            total_mb: float | None = float(stats.ram_total_mb)
        else:
            used, total_mb = meminfo_mb(self.env)
        if util is None and stats is None:
            self.degraded_reason = "no GPU load file and no tegrastats line"
            if used is None:
                raise ProbeError(self.degraded_reason)
        else:
            self.degraded_reason = None
        return Sample(
            cpu=stats.cpu_util if stats is not None else None,
            memory=(used / total_mb) if used is not None and total_mb else None,
            xpu_util=util,
            xpu_mem_used_mb=used,  # unified memory: RAM in use includes GPU allocations
            xpu_mem_total_mb=total_mb,
            temperature_c=temp,
            power_w=power,
            source=self.name,
        )

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
