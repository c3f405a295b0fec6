"""Which board this is: the device type (named, aliased, detected by the probes or emulated),
the probes that watch it, and how many slots its hardware runs at once."""

from __future__ import annotations

from typing import Optional

from edgesched.agent.emulation import Profile
from edgesched.agent.probes import GenericProbe, Probe, ProbeEnv
from edgesched.agent.probes import detect as detect_probes
from edgesched.boards import ALIASES, AUTO, CPU, DEVICE_TYPES, HARDWARE_SLOTS, PROBE_DEVICE
from edgesched.errors import UnknownPluginError


def detect_device(
    device_type: str,
    profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
) -> tuple[str, list[Probe]]:
    """The device type the agent reports and the probe chain that watches it.

    An emulated board reports no real accelerator figures: only the host's (the generic probe).
    """
    requested = ALIASES.get(device_type, device_type)
    if requested not in DEVICE_TYPES:
        raise UnknownPluginError("device type", device_type, [*DEVICE_TYPES, *ALIASES])
    chain: list[Probe] = [GenericProbe(ProbeEnv())] if profile is not None else detect_probes()
    if profile is not None:
        return profile.name, chain
    if requested == AUTO:
        found = [p.name for p in chain]
        return next((PROBE_DEVICE[n] for n in found if n in PROBE_DEVICE), CPU), chain
    return requested, chain


def slot_count(
    configured: int,
    device_type: str,
    profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
) -> int:
    """``agent.slots`` when set, else the emulated board's, else the hardware's."""
    if configured:
        return configured
    return profile.slots if profile else HARDWARE_SLOTS.get(device_type, 1)
