"""Pure parser for one ``tegrastats`` line (devices.md §3.1): JetPack 4 to 6, Nano/NX/AGX."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgesched.agent.probes.base import mean

_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?!\S)")
# "<RAIL> <cur>mW/<avg>mW" (JP5.1+) or "<RAIL> <cur>/<avg>" with mW implied (JP4, early JP5);
# the lookarounds keep "RAM 2272/7620MB" out
_RAIL = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?!\S)")
#: the rails that measure the whole board input, best first
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
#: sentinel of an absent or powered-off sensor
ABSENT_C = -256.0


@dataclass(frozen=True)
class Rail:
    name: str
    current_mw: float
    average_mw: float


@dataclass(frozen=True)
class TegrastatsSample:
    timestamp: str | None = None  #: JetPack 5.1+ only
    ram_used_mb: int | None = None  #: unified memory: includes GPU allocations
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_pcts: tuple[float | None, ...] = ()  #: None for an offline core
    emc_pct: float | None = None
    gr3d_pct: float | None = None
    gr3d_freqs_mhz: tuple[int, ...] = ()  #: one per GPC ("@[0,0]" on AGX Orin)
    temps_c: dict[str, float] = field(default_factory=dict)  #: names as printed
    absent_sensors: tuple[str, ...] = ()  #: those that read -256C
    rails: dict[str, Rail] = field(default_factory=dict)

    @property
    def is_sample(self) -> bool:
        """False for blank lines, comments and other noise on tegrastats' stdout."""
        return self.ram_total_mb is not None

    def temp(self, *names: str) -> float | None:
        """The first of ``names`` present, case-insensitively (``gpu@`` on JP6, ``GPU@`` JP5)."""
        lowered = {k.lower(): v for k, v in self.temps_c.items()}
        for name in names:
            if name.lower() in lowered:
                return lowered[name.lower()]
        return None

    @property
    def cpu_util(self) -> float | None:
        """Mean busy fraction of the online cores."""
        value = mean(self.cpu_pcts)
        return value / 100.0 if value is not None else None

    @property
    def power_w(self) -> float | None:
        """Board input power: ``VDD_IN`` where it exists; on AGX Orin (no VDD_IN) the sum of
        the rails, which under-reads the carrier's input."""
        for name in INPUT_RAILS:
            if name in self.rails:
                return self.rails[name].current_mw / 1000.0
        rails = [r for n, r in self.rails.items() if n != "NC" and "SUM" not in n]
        return sum(r.current_mw for r in rails) / 1000.0 if rails else None


def _cpu_pct(item: str) -> float | None:
    match = re.match(r"\s*(\d+)%", item)
    return float(match.group(1)) if match else None  # "off" and junk read as unknown


def parse_tegrastats(line: str) -> TegrastatsSample:
    """One line; fields that are not printed stay None (see ``is_sample``)."""
    if line.lstrip().startswith("#"):
        return TegrastatsSample()
    timestamp = _TIMESTAMP.match(line)
    ram = _RAM.search(line)
    swap = _SWAP.search(line)
    cpu = _CPU.search(line)
    emc = _EMC.search(line)
    gr3d = _GR3D.search(line)
    temps: dict[str, float] = {}
    absent: list[str] = []
    for name, value in _TEMP.findall(line):
        if float(value) <= ABSENT_C:
            absent.append(name)
        else:
            temps[name] = float(value)
    rails = {
        name: Rail(name, float(cur), float(avg))
        for name, cur, avg in _RAIL.findall(line)
        if name not in ("RAM", "SWAP")
    }
    return TegrastatsSample(
        timestamp=timestamp.group(1) if timestamp else None,
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        swap_used_mb=int(swap.group(1)) if swap else None,
        swap_total_mb=int(swap.group(2)) if swap else None,
        cpu_pcts=tuple(_cpu_pct(item) for item in cpu.group(1).split(",")) if cpu else (),
        emc_pct=float(emc.group(1)) if emc else None,
        gr3d_pct=float(gr3d.group(1)) if gr3d else None,
        gr3d_freqs_mhz=(
            tuple(int(f) for f in gr3d.group(2).split(",") if f) if gr3d and gr3d.group(2) else ()
        ),
        temps_c=temps,
        absent_sensors=tuple(absent),
        rails=rails,
    )
