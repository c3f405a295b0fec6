"""Huawei Atlas 310 / 310B / 310P through ``npu-smi`` (devices.md §1.2).

npu-smi is slow (seconds per one-shot call) and not safe to run concurrently, so every call
goes through one process-wide lock and one timeout. The summary table is read first because it
works everywhere (also inside RC-mode containers, where ``-t usages`` is refused); the
``-t usages`` / ``-t common`` views are the fallback when no table can be parsed.
"""

from __future__ import annotations

import threading
from typing import Any

from edgesched.agent.probes.base import (
    Probe,
    ProbeError,
    Sample,
    fraction,
    mean,
    merge_samples,
    total,
)
from edgesched.agent.probes.env import ProbeEnv, ProbeTimeout
from edgesched.agent.probes.npu_smi import (
    NpuSmiInfo,
    NpuUsage,
    parse_npu_smi_common,
    parse_npu_smi_info,
    parse_npu_smi_usages,
    soc_version,
)

#: One npu-smi at a time in this process, whatever probe or collector asks (§1.2 pitfalls).
NPU_SMI_LOCK = threading.Lock()


class AscendProbe(Probe):
    name = "ascend"
    min_interval_s = 5.0  # one-shot npu-smi costs seconds: polling faster only queues calls
    needs_root = False  # root or the HwHiAiUser group

    def __init__(self, env: ProbeEnv, timeout_s: float = 10.0, npu_id: int = 0) -> None:
        super().__init__(env)
        self.timeout_s = timeout_s
        self.npu_id = npu_id
        self._info: dict[str, Any] = {}

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        return env.which("npu-smi") is not None or bool(env.glob("/dev/davinci[0-9]*"))

    def static_info(self) -> dict[str, Any]:
        # what the last call taught us; static_info never runs npu-smi itself
        return {**super().static_info(), **self._info}

    def npu_smi(self, *args: str) -> str:
        """Runs ``npu-smi ARGS`` serialised with every other call, under the timeout."""
        if not NPU_SMI_LOCK.acquire(timeout=self.timeout_s):
            raise ProbeTimeout("npu-smi: an earlier call is still running")
        try:
            return self.env.run(["npu-smi", *args], timeout=self.timeout_s)
        finally:
            NPU_SMI_LOCK.release()

    def sample(self) -> Sample:
        try:
            info = parse_npu_smi_info(self.npu_smi("info"))
        except ProbeTimeout:
            raise  # a hung npu-smi would hang on the other views too
        except ProbeError:
            info = NpuSmiInfo(version=None, chips=())
        if info.chips:
            return self._from_table(info)
        return self._from_views()

    def _from_table(self, info: NpuSmiInfo) -> Sample:
        chips = info.chips
        names = [c.name for c in chips if c.name]
        self._info.update(
            soc=soc_version(names[0]) if names else None,
            npu_smi_version=info.version,
            chips=len(chips),
            health=[c.health for c in chips],
        )
        per_unit = tuple(fraction(c.aicore_pct) for c in chips)
        temps = [c.temp_c for c in chips if c.temp_c is not None]
        return Sample(
            xpu_util=mean(per_unit),
            xpu_mem_used_mb=total([c.mem_used_mb for c in chips]),
            xpu_mem_total_mb=total([c.mem_total_mb for c in chips]),
            temperature_c=max(temps) if temps else None,
            power_w=total([c.power_w for c in chips]),  # "NA" on the 2nd chip of a 300I Duo
            per_unit=per_unit,
            source=self.name,
        )

    def _from_views(self) -> Sample:
        samples: list[Sample] = []
        errors: list[str] = []
        for view, parse in (("usages", parse_npu_smi_usages), ("common", parse_npu_smi_common)):
            try:
                text = self.npu_smi("info", "-t", view, "-i", str(self.npu_id))
            except ProbeTimeout:
                raise
            except ProbeError as exc:
                errors.append(str(exc))  # -t usages is refused in RC-mode containers
                continue
            records = parse(text)
            if records:
                samples.append(self._from_records(records))
        if not samples:
            raise ProbeError("npu-smi: no chip found" + (f" ({errors[-1]})" if errors else ""))
        merged, _ = merge_samples(samples)  # usages first, common fills temperature and power
        self._info.setdefault("chips", len(merged.per_unit or ()))
        return merged

    def _from_records(self, records: list[NpuUsage]) -> Sample:
        chips = [r for r in records if not r.is_mcu]
        mcus = [r for r in records if r.is_mcu]
        per_unit = tuple(
            fraction(r.aicore_pct if r.aicore_pct is not None else r.npu_util_pct) for r in chips
        )
        temps = [r.temperature_c for r in chips if r.temperature_c is not None]
        power = total([r.power_w for r in chips])
        if not temps:
            temps = [r.temperature_c for r in mcus if r.temperature_c is not None]
        if power is None:
            # the MCU of a 200I DK A2 reports the board's dissipation: the best figure there is
            power = total([r.power_w for r in mcus])
        return Sample(
            xpu_util=mean(per_unit),
            xpu_mem_used_mb=total([r.memory_used_mb for r in chips]),
            xpu_mem_total_mb=total([r.memory_capacity_mb for r in chips]),
            temperature_c=max(temps) if temps else None,
            power_w=power,
            per_unit=per_unit or None,
            source=self.name,
        )
