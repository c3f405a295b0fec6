"""What the agent tells the master when it joins: who it is, what it can run, on what."""

from __future__ import annotations

import socket
from typing import Optional

from edgesched import __version__
from edgesched.agent.backends import Backend
from edgesched.agent.emulation import PROFILES, Profile
from edgesched.agent.identity import Identity
from edgesched.agent.link import PROTOCOL
from edgesched.agent.probes import ProbeCollector
from edgesched.config import AgentSettings
from edgesched.wire import link


def register_message(
    a: AgentSettings,
    identity: Identity,
    device_type: str,
    profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
    backend: Backend,
    probes: ProbeCollector,
    slots: int,
    running_task_ids: list[str],
    finished_task_ids: list[str],
    session: int,
) -> link.AgentMessage:
    """The Register message, the first on every link."""
    held = backend.artefacts()
    return link.register(
        protocol=PROTOCOL,
        join_token=a.token,
        agent_id=identity.agent_id,
        credential=identity.credential,
        hostname=socket.gethostname(),
        device_type=device_type,
        emulated=profile is not None,
        emulation_profile=profile.name if profile else "",
        time_scale=a.time_scale,
        task_types=sorted({h.task_type for h in held}),
        artefacts=held,
        model_formats=list(profile.formats if profile else backend.formats),
        sub_devices=sub_devices(device_type, profile, slots),
        slots=slots,
        backends=[backend.name],
        running_task_ids=running_task_ids,
        finished_task_ids=finished_task_ids,
        agent_version=__version__,
        static_info=static_info(backend, probes, profile),
        session=session,
    )


def sub_devices(
    device_type: str,
    profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
    slots: int,
) -> list[link.SubDevice]:
    """The board's NPU cores / GPU / chips, when its slots are the hardware's own."""
    known = profile or PROFILES.get(device_type)
    if known is not None and known.slots == slots:
        return [link.SubDevice(name=s.name, kind=s.kind, slots=s.slots) for s in known.sub_devices]
    return [link.SubDevice(name="cpu", kind="cpu", slots=slots)]


def static_info(
    backend: Backend,
    probes: ProbeCollector,
    profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
) -> dict[str, str]:
    info = {
        "backend": backend.name,
        "probes": ",".join(p.name for p in probes.probes),
    }
    for probe in probes.probes:
        for key, value in probe.static_info().items():
            if value not in (None, "") and key != "kind":
                info[f"{probe.name}.{key}"] = str(value)
    if profile is not None:
        info["emulation_source"] = profile.source
    return info
