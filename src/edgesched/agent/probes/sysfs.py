"""Small sysfs / procfs readers shared by the SoC probes (thermal zones, meminfo, device tree)."""

from __future__ import annotations

import re

from edgesched.agent.probes.env import ProbeEnv

#: Jetson GPU load files, first that exists wins (devices.md §3.2); values are per-mille.
JETSON_GPU_LOAD_PATHS = (
    "/sys/devices/platform/bus@0/17000000.gpu/load",  # Orin, JetPack 6
    "/sys/devices/platform/17000000.ga10b/load",  # Orin, JetPack 5
    "/sys/devices/gpu.0/load",  # older L4T / symlink
    "/sys/devices/platform/gpu.0/load",
)
JETSON_GPU_LOAD_GLOB = "/sys/class/devfreq/*gpu*/device/load"


def parse_millidegrees(text: str) -> float | None:
    """A thermal zone ``temp`` (m°C) in °C; absent sensors read -256 °C or junk."""
    try:
        value = int(text.strip()) / 1000.0
    except ValueError:
        return None
    return None if value <= -200.0 or value > 200.0 else value


def thermal_zone_c(env: ProbeEnv, types: tuple[str, ...]) -> float | None:
    """The temperature of the first zone whose ``type`` is in ``types`` (in that order).

    Zones are matched by type, never by index: indices differ between boards and kernels.
    """
    by_type: dict[str, str] = {}
    for type_path in env.glob("/sys/class/thermal/thermal_zone*/type"):
        zone_type = (env.read_optional(type_path) or "").strip()
        by_type.setdefault(zone_type, type_path[: -len("type")] + "temp")
    for wanted in types:
        temp_path = by_type.get(wanted)
        if temp_path is None:
            continue
        text = env.read_optional(temp_path)
        value = parse_millidegrees(text) if text is not None else None
        if value is not None:
            return value
    return None


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as kB values by key."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+(?:\(\w+\))?):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


def meminfo_mb(env: ProbeEnv) -> tuple[float | None, float | None]:
    """(used MB, total MB) of system RAM: on RK3588 and Jetson the accelerator shares it."""
    text = env.read_optional("/proc/meminfo")
    if text is None:
        return None, None
    info = parse_meminfo(text)
    total_kb = info.get("MemTotal")
    available_kb = info.get("MemAvailable")
    if total_kb is None:
        return None, None
    if available_kb is None:
        return None, round(total_kb / 1024.0, 1)
    return round((total_kb - available_kb) / 1024.0, 1), round(total_kb / 1024.0, 1)


def compatible(env: ProbeEnv) -> list[str]:
    """The device-tree ``compatible`` strings (NUL separated in the file)."""
    text = env.read_optional("/proc/device-tree/compatible")
    if not text:
        return []
    return [part.strip() for part in text.split("\0") if part.strip()]


def device_model(env: ProbeEnv) -> str | None:
    text = env.read_optional("/proc/device-tree/model")
    if text is None:
        return None
    return text.replace("\0", "").strip() or None  # device-tree strings end in NUL


def is_tegra(env: ProbeEnv) -> bool:
    """A Jetson: NVML and nvidia-smi report nothing useful there and must not be selected."""
    if env.exists("/etc/nv_tegra_release"):
        return True
    if any(c.startswith("nvidia,tegra") for c in compatible(env)):
        return True
    return any(env.exists(p) for p in JETSON_GPU_LOAD_PATHS)
