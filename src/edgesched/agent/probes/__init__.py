"""Device probes, one per board family, behind one interface (devices.md §8.1).

``detect()`` builds the chain for this machine (or a fake root): the specific probes in
priority order, NVIDIA only off Tegra, then the generic psutil probe, always last.
A ``ProbeCollector`` polls the chain in the background and merges it field by field.
"""

from __future__ import annotations

import os

from edgesched.agent.probes.ascend import AscendProbe
from edgesched.agent.probes.base import METRIC_FIELDS, Probe, ProbeError, Sample, merge_samples
from edgesched.agent.probes.collector import ProbeCollector, ProbeState
from edgesched.agent.probes.env import ProbeEnv
from edgesched.agent.probes.generic import GenericProbe
from edgesched.agent.probes.jetson import JetsonProbe
from edgesched.agent.probes.nvidia import NvidiaProbe
from edgesched.agent.probes.rknpu import RknpuProbe

#: name → class in chain order. NVIDIA's own detect() refuses a Tegra board, so a Jetson that
#: ships nvidia-smi (JetPack 6) still gets the Jetson probe. The generic probe stays last.
PROBES: dict[str, type[Probe]] = {
    NvidiaProbe.name: NvidiaProbe,
    JetsonProbe.name: JetsonProbe,
    AscendProbe.name: AscendProbe,
    RknpuProbe.name: RknpuProbe,
    GenericProbe.name: GenericProbe,
}


def detected(env: ProbeEnv) -> list[type[Probe]]:
    """The probe classes that apply, in chain order; a detect() that raises counts as no."""
    found: list[type[Probe]] = []
    for cls in PROBES.values():
        try:
            applies = cls is GenericProbe or cls.detect(env)
        except Exception:  # detection must never break the agent's start
            applies = False
        if applies:
            found.append(cls)
    return found


def build_chain(env: ProbeEnv) -> list[Probe]:
    """One instance of every probe that applies, generic last."""
    return [cls(env) for cls in detected(env)]


def detect(sysroot: str | os.PathLike[str] | None = None) -> list[Probe]:
    """The probe chain of this machine, or of the fake root ``sysroot``."""
    return build_chain(ProbeEnv(sysroot))


__all__ = [
    "METRIC_FIELDS",
    "PROBES",
    "AscendProbe",
    "GenericProbe",
    "JetsonProbe",
    "NvidiaProbe",
    "Probe",
    "ProbeCollector",
    "ProbeEnv",
    "ProbeError",
    "ProbeState",
    "RknpuProbe",
    "Sample",
    "build_chain",
    "detect",
    "detected",
    "merge_samples",
]
