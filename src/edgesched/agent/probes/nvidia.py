"""NVIDIA GPU servers: NVML in-process through ``nvidia-ml-py`` when it is installed, else the
``nvidia-smi`` CSV under a timeout (devices.md §4). Never selected on a Jetson (§3.2).

``pynvml`` is optional and imported lazily, on the first sample, never at module import: the
project must install and test on machines (and boards) that do not have it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

from edgesched.agent.probes.base import Probe, ProbeError, Sample, fraction, mean, total
from edgesched.agent.probes.env import ProbeEnv
from edgesched.agent.probes.sysfs import is_tegra

QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
)
_MISSING = {"", "N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", "[GPU is lost]", "ERR!"}
_NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:%|MiB|MB|W|C|MHz)?$")
_HEADER_CELL = re.compile(r"^[a-z_]+(?:\.[a-z_]+)*(?: \[[^\]]*\])?$")


@dataclass(frozen=True)
class GpuRow:
    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    mem_used_mb: float | None = None  #: MiB, as nvidia-smi and NVML count
    mem_total_mb: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_tegra(self) -> bool:
        """A Jetson's integrated GPU (``Orin (nvgpu)``): its numbers mean nothing."""
        return any("nvgpu" in v.lower() for v in (self.name or "", *self.raw.values()))


def _csv_number(text: str | None) -> float | None:
    if text is None or text.strip() in _MISSING or text.strip().startswith("["):
        return None
    match = _NUMBER.match(text.strip())
    return float(match.group(1)) if match else None


def _csv_text(text: str | None) -> str | None:
    return None if text is None or text.strip() in _MISSING else text.strip()


def parse_nvidia_smi_csv(text: str, fields: tuple[str, ...] = QUERY_FIELDS) -> list[GpuRow]:
    """``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    A header line (``--format=csv``) names the columns and may carry units (``memory.used
    [MiB]``); without one, ``fields`` gives the order of the query. Unit suffixes are stripped
    and ``[N/A]`` / ``[Not Supported]`` read as None.
    """
    names = list(fields)
    rows: list[GpuRow] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or line.lstrip().startswith("#"):
            continue  # blank lines, comments and driver errors ("Unable to determine ...")
        if all(_HEADER_CELL.match(c) for c in cells):
            names = [re.sub(r"\s*\[.*\]$", "", c) for c in cells]
            continue
        raw = {names[i]: cells[i] for i in range(min(len(names), len(cells)))}
        index = _csv_number(raw.get("index"))
        rows.append(
            GpuRow(
                index=int(index) if index is not None else None,
                uuid=_csv_text(raw.get("uuid")),
                name=_csv_text(raw.get("name")),
                util_gpu_pct=_csv_number(raw.get("utilization.gpu")),
                util_mem_pct=_csv_number(raw.get("utilization.memory")),
                mem_used_mb=_csv_number(raw.get("memory.used")),
                mem_total_mb=_csv_number(raw.get("memory.total")),
                temp_c=_csv_number(raw.get("temperature.gpu")),
                power_w=_csv_number(raw.get("power.draw")),
                raw=raw,
            )
        )
    return rows


class _Nvml:
    """The few NVML calls we need; each unsupported metric reads as None, not as a failure."""

    def __init__(self, module: Any) -> None:
        self.nvml = module
        self.error: type[BaseException] = getattr(module, "NVMLError", Exception)
        module.nvmlInit()

    def _get(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, name)(*args)
        except self.error:
            return None  # NVMLError_NotSupported and friends

    def rows(self) -> list[GpuRow]:
        rows: list[GpuRow] = []
        for index in range(int(self.nvml.nvmlDeviceGetCount())):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            name = self._get("nvmlDeviceGetName", handle)
            util = self._get("nvmlDeviceGetUtilizationRates", handle)
            memory = self._get("nvmlDeviceGetMemoryInfo", handle)
            temp = self._get(
                "nvmlDeviceGetTemperature", handle, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0)
            )
            power_mw = self._get("nvmlDeviceGetPowerUsage", handle)
            rows.append(
                GpuRow(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else name,  # old bindings
                    util_gpu_pct=float(util.gpu) if util is not None else None,
                    util_mem_pct=float(util.memory) if util is not None else None,
                    mem_used_mb=memory.used / 2**20 if memory is not None else None,
                    mem_total_mb=memory.total / 2**20 if memory is not None else None,
                    temp_c=float(temp) if temp is not None else None,
                    power_w=power_mw / 1000.0 if power_mw is not None else None,  # NVML: mW
                )
            )
        return rows

    def close(self) -> None:
        with contextlib.suppress(self.error):
            self.nvml.nvmlShutdown()


def nvml_available() -> bool:
    """Whether ``nvidia-ml-py`` is installed, without importing it."""
    return importlib.util.find_spec("pynvml") is not None


class NvidiaProbe(Probe):
    name = "nvidia"
    min_interval_s = 0.5  # NVML's own sample period; raised for the nvidia-smi fallback
    needs_root = False

    def __init__(self, env: ProbeEnv, timeout_s: float = 5.0, nvml_module: Any = None) -> None:
        super().__init__(env)
        self.timeout_s = timeout_s
        self._module = nvml_module
        self._nvml: _Nvml | None = None
        self._gpus: list[str] = []
        # A fake root cannot fake an in-process library: NVML is for the real machine only.
        use_nvml = nvml_module is not None or (env.sysroot is None and nvml_available())
        self.backend = "nvml" if use_nvml and not is_tegra(env) else "nvidia-smi"
        if self.backend == "nvidia-smi":
            self.min_interval_s = 2.0  # each poll spawns a process that may take seconds

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        if is_tegra(env):
            return False
        if env.which("nvidia-smi") is not None:
            return True
        return (
            env.sysroot is None and env.exists("/proc/driver/nvidia/version") and (nvml_available())
        )

    def static_info(self) -> dict[str, Any]:
        return {**super().static_info(), "backend": self.backend, "gpus": list(self._gpus)}

    def _nvml_rows(self) -> list[GpuRow] | None:
        if self._nvml is None:
            try:
                module = self._module or importlib.import_module("pynvml")
                self._nvml = _Nvml(module)
            except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded
                self.backend = "nvidia-smi"
                self.min_interval_s = 2.0
                self.degraded_reason = f"NVML unusable, using nvidia-smi: {exc}"
                return None
        return self._nvml.rows()

    def _smi_rows(self) -> list[GpuRow]:
        argv = [
            "nvidia-smi",
            "--query-gpu=" + ",".join(QUERY_FIELDS),
            "--format=csv,noheader,nounits",
        ]
        return parse_nvidia_smi_csv(self.env.run(argv, timeout=self.timeout_s))

    def sample(self) -> Sample:
        rows = self._nvml_rows() if self.backend == "nvml" else None
        if rows is None:
            rows = self._smi_rows()
        rows = [r for r in rows if not r.is_tegra]
        if not rows:
            raise ProbeError(f"{self.backend}: no usable GPU")
        self._gpus = [r.name or f"gpu{r.index}" for r in rows]
        per_unit = tuple(fraction(r.util_gpu_pct) for r in rows)
        temps = [r.temp_c for r in rows if r.temp_c is not None]
        return Sample(
            xpu_util=mean(per_unit),
            xpu_mem_used_mb=total([r.mem_used_mb for r in rows]),
            xpu_mem_total_mb=total([r.mem_total_mb for r in rows]),
            temperature_c=max(temps) if temps else None,
            power_w=total([r.power_w for r in rows]),
            per_unit=per_unit,
            source=self.name,
        )

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None
