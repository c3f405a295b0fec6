"""Pure parsers for Huawei ``npu-smi`` output (devices.md §1.2, fixtures A–G).

Field names and table layouts differ between chips (310, 310B, 310P, 910) and driver versions, so
every parser goes through an alias map and treats ``NA`` / ``-`` as unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MISSING = {"", "NA", "N/A", "-", "--"}
_PAIR = re.compile(r"(\S+)\s*/\s*(\S+)")


def _num(text: str | None) -> float | None:
    if text is None or text.strip() in _MISSING:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _num(text)
    return int(value) if value is not None and value == int(value) else None


def soc_version(name: str | None) -> str | None:
    """The ATC ``--soc_version`` string for a table ``Name`` (``310P3`` → ``Ascend310P3``)."""
    if not name or name in _MISSING:
        return None
    return name if name.lower().startswith("ascend") else f"Ascend{name}"


@dataclass(frozen=True)
class NpuChip:
    """One chip of the ``npu-smi info`` table (a pair of rows)."""

    npu_id: int | None
    chip_id: int | None
    name: str | None
    health: str | None
    power_w: float | None
    temp_c: float | None
    aicore_pct: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    device_id: int | None = None
    bus_id: str | None = None
    hugepages_used: float | None = None
    hugepages_total: float | None = None


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str | None
    chips: tuple[NpuChip, ...]


def _is_separator(line: str) -> bool:
    return line.startswith("+") and set(line.strip()) <= {"+", "-", "="}


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """The ``npu-smi info`` summary table; rows come in pairs between separators."""
    version: str | None = None
    chips: list[NpuChip] = []
    first: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if _is_separator(line):
            first = None  # a pair never spans a separator
            continue
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        joined = " ".join(cells)
        if "npu-smi" in joined and version is None:
            match = re.search(r"Version:\s*(\S+)", joined) or re.search(r"npu-smi\s+(\S+)", joined)
            version = match.group(1) if match else None
            continue
        if "Process" in joined or "No running processes" in joined:
            break  # the process section follows the chip table
        if cells[0].startswith(("NPU", "Chip")) or len(cells) < 3:
            continue  # column headers
        if first is None:
            first = cells
            continue
        chips.append(_chip_from_rows(first, cells))
        first = None
    return NpuSmiInfo(version=version, chips=tuple(chips))


def _chip_from_rows(row1: list[str], row2: list[str]) -> NpuChip:
    ids1 = row1[0].split()
    ids2 = row2[0].split()
    metrics1 = _PAIR.sub(" ", row1[2]).split()
    hugepages = _PAIR.findall(row1[2])
    pairs = _PAIR.findall(row2[2])
    # 910-class tables add an HBM pair after the DDR one: the last pair is device memory.
    used, total = pairs[-1] if pairs else (None, None)
    aicore = _PAIR.sub(" ", row2[2]).split()
    return NpuChip(
        npu_id=_int(ids1[0]) if ids1 else None,
        name=ids1[1] if len(ids1) > 1 and ids1[1] not in _MISSING else None,
        health=row1[1] if row1[1] not in _MISSING else None,
        power_w=_num(metrics1[0]) if metrics1 else None,
        temp_c=_num(metrics1[1]) if len(metrics1) > 1 else None,
        hugepages_used=_num(hugepages[0][0]) if hugepages else None,
        hugepages_total=_num(hugepages[0][1]) if hugepages else None,
        chip_id=_int(ids2[0]) if ids2 else None,
        device_id=_int(ids2[1]) if len(ids2) > 1 else None,
        bus_id=row2[1] if row2[1] not in _MISSING else None,
        aicore_pct=_num(aicore[0]) if aicore else None,
        mem_used_mb=_num(used),
        mem_total_mb=_num(total),
    )


# key → (attribute, memory kind); several spellings per attribute (devices.md §1.2 alias list)
_KV_ALIASES: dict[str, str] = {
    "NPU ID": "npu_id",
    "Chip ID": "chip_id",
    "Chip Name": "chip_name",
    "Aicore Usage Rate(%)": "aicore_pct",
    "AI Core Usage Rate(%)": "aicore_pct",
    "AICore Usage Rate(%)": "aicore_pct",
    "Aicpu Usage Rate(%)": "aicpu_pct",
    "Ctrlcpu Usage Rate(%)": "ctrlcpu_pct",
    "Aivector Usage Rate(%)": "aivector_pct",
    "NPU Utilization(%)": "npu_util_pct",
    "NPU Real-time Utilization(%)": "npu_util_pct",
    "Chip Usage Rate(%)": "npu_util_pct",
    "Temperature(C)": "temperature_c",
    "NPU Temperature(C)": "temperature_c",
    "Power(W)": "power_w",
    "Power Dissipation(W)": "power_w",
    "NPU Real-time Power(W)": "power_w",
    # the rated figure is a spec value, not a measurement: kept apart on purpose
    "Rated Power Dissipation(W)": "rated_power_w",
}
_MEM_KINDS = ("HBM", "DDR", "Memory")  # preference: a part with HBM reports 0 MB of DDR


@dataclass(frozen=True)
class NpuUsage:
    """One record of ``npu-smi info -t usages`` / ``-t common`` (a chip, or the MCU)."""

    npu_id: int | None
    chip_id: int | None
    chip_name: str | None = None
    aicore_pct: float | None = None
    aicpu_pct: float | None = None
    ctrlcpu_pct: float | None = None
    aivector_pct: float | None = None
    npu_util_pct: float | None = None
    memory_capacity_mb: float | None = None
    memory_usage_pct: float | None = None
    memory_used_mb: float | None = None  #: derived: capacity × rate / 100
    temperature_c: float | None = None
    power_w: float | None = None
    rated_power_w: float | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_mcu(self) -> bool:
        return (self.chip_name or "").upper() == "MCU"


def _record(raw: dict[str, str], npu_id: int | None) -> NpuUsage | None:
    values: dict[str, object] = {}
    for key, text in raw.items():
        attr = _KV_ALIASES.get(key)
        if attr == "chip_name":
            values[attr] = text or None
        elif attr in ("npu_id", "chip_id"):
            values[attr] = _int(text)
        elif attr is not None:
            values[attr] = _num(text)
    capacity = rate = None
    for kind in _MEM_KINDS:
        cap = _num(raw.get(f"{kind} Capacity(MB)"))
        if cap:  # None or 0: this part does not have that kind of memory
            capacity, rate = cap, _num(raw.get(f"{kind} Usage Rate(%)"))
            break
    if capacity is None:
        rate = _num(raw.get("Memory Usage Rate(%)"))
    metrics = [k for k in values if k not in ("npu_id", "chip_id", "chip_name")]
    if not metrics and capacity is None and rate is None:
        return None  # the "NPU ID / Chip Count" header block
    used = float(int(capacity * rate / 100)) if capacity is not None and rate is not None else None
    values.setdefault("npu_id", npu_id)
    values.setdefault("chip_id", None)
    return NpuUsage(
        memory_capacity_mb=capacity,
        memory_usage_pct=rate,
        memory_used_mb=used,
        raw=dict(raw),
        **values,  # type: ignore[arg-type]
    )


def parse_npu_smi_kv(text: str) -> list[NpuUsage]:
    """``key : value`` blocks of ``npu-smi info -t usages|common -i N``.

    ``Chip ID`` may come before the values (310B) or after them (newer 310P/910), so a record is
    flushed at a blank line, at a second ``Chip ID``, or at the end — never at the first one.
    """
    records: list[NpuUsage] = []
    current: dict[str, str] = {}
    npu_id: int | None = None

    def flush() -> None:
        nonlocal npu_id
        if "NPU ID" in current:
            npu_id = _int(current["NPU ID"])
        record = _record(current, npu_id)
        if record is not None:
            records.append(record)
        current.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key in current and key in ("Chip ID", "Chip Name"):
            flush()
        current[key] = value.strip()
    flush()
    return records


def parse_npu_smi_usages(text: str) -> list[NpuUsage]:
    """``npu-smi info -t usages -i N`` (fixtures D and E)."""
    return parse_npu_smi_kv(text)


def parse_npu_smi_common(text: str) -> list[NpuUsage]:
    """``npu-smi info -t common -i N`` (fixture F; the MCU block has ``Chip Name : MCU``)."""
    return parse_npu_smi_kv(text)


@dataclass(frozen=True)
class NpuWatchRow:
    npu_id: int | None
    chip_id: int | None
    power_w: float | None
    temp_c: float | None
    aicore_pct: float | None
    aicpu_pct: float | None
    ctrlcpu_pct: float | None
    memory_pct: float | None
    memory_bw_pct: float | None


_WATCH_COLUMNS = {
    "NpuID(Idx)": "npu_id",
    "ChipId(Idx)": "chip_id",
    "Pwr(W)": "power_w",
    "Temp(C)": "temp_c",
    "AI Core(%)": "aicore_pct",
    "AI Cpu(%)": "aicpu_pct",
    "Ctrl Cpu(%)": "ctrlcpu_pct",
    "Memory(%)": "memory_pct",
    "Memory BW(%)": "memory_bw_pct",
}


def parse_npu_smi_watch(text: str) -> list[NpuWatchRow]:
    """Rows of ``npu-smi info watch`` (fixture G); the header may repeat at each refresh."""
    columns: list[str] = []
    rows: list[NpuWatchRow] = []
    for line in text.splitlines():
        if "(" in line and not line.strip()[:1].isdigit():
            # column names hold single spaces ("AI Core(%)"); each ends with ")"
            columns = [h.strip() for h in re.findall(r"[^()]+?\([^)]*\)", line)]
            continue
        cells = line.split()
        if not columns or len(cells) != len(columns):
            continue
        values: dict[str, float | None] = {}
        for index, column in enumerate(columns):
            attr = _WATCH_COLUMNS.get(column)
            if attr is not None:
                values[attr] = _num(cells[index])
        npu, chip = values.pop("npu_id", None), values.pop("chip_id", None)
        row = {a: values.get(a) for a in _WATCH_COLUMNS.values() if a not in ("npu_id", "chip_id")}
        rows.append(
            NpuWatchRow(
                npu_id=int(npu) if npu is not None else None,
                chip_id=int(chip) if chip is not None else None,
                **row,
            )
        )
    return rows
