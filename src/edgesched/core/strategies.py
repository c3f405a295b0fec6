"""Placement strategies: given a task and candidate devices, pick one. Found by name.

A strategy is a small object with ``choose(task, candidates) -> Device``. Candidates are already
filtered (healthy, not draining, can run the task type, have a free slot) and sorted by id.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from edgesched.config import SchedulingSettings
from edgesched.core.estimates import ServiceTimes
from edgesched.core.state import Device, Task, clean_fraction
from edgesched.errors import UnknownPluginError


class Strategy(Protocol):
    name: str

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device: ...


class RoundRobin:
    """Fair rotation over the candidates, in id order, continuing after the last device chosen."""

    name = "roundrobin"

    def __init__(self, settings: SchedulingSettings, rng: random.Random) -> None:
        self._last = ""

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device:
        for device in candidates:
            if device.id > self._last:
                self._last = device.id
                return device
        self._last = candidates[0].id
        return candidates[0]


def network_ms(device: Device, payload_bytes: int, assumed_bandwidth_mbps: float) -> float:
    """Time to move the payload to the device plus one round trip, in milliseconds."""
    bandwidth = device.metrics.bandwidth_mbps
    if not bandwidth > 0:
        bandwidth = assumed_bandwidth_mbps
    transfer_ms = payload_bytes * 8 / (bandwidth * 1e6) * 1e3
    return transfer_ms + max(0.0, device.metrics.latency_ms)


def load_score(device: Device, payload_bytes: int, s: SchedulingSettings) -> float:
    """The seed's weighted load score in consistent units; lower is better.

    score = w_cpu·cpu + w_mem·mem + w_xpu·xpu' + w_net·(bytes ÷ bandwidth + rtt) ÷ t_ref
            + w_slots·(slots in use ÷ slots) + w_queue·(expected queue wait ÷ t_ref)

    Utilisations are fractions. ``xpu'`` is the reported XPU utilisation plus one slot's share for
    every task sent since the last heartbeat (optimistic accounting: otherwise a burst herds onto
    the device that looked idle). A device without an XPU figure uses its CPU in that term.
    A device's score never depends on the other candidates.
    """
    m = device.metrics
    slots = max(1, device.slots)
    pending = device.sent_since_heartbeat / slots
    cpu = clean_fraction(m.cpu)
    has_xpu = m.xpu >= 0
    xpu = clean_fraction(m.xpu) if has_xpu else cpu
    xpu_est = min(1.0, xpu + pending)
    used = min(len(device.inflight), slots) / slots
    # a task sent into the prefetch queue waits for the tasks ahead of it, at the device's pace
    ahead = len(device.inflight) - slots + 1
    queue_ms = ahead * device.mean_service_ms / slots if ahead > 0 else 0.0
    net = network_ms(device, payload_bytes, s.assumed_bandwidth_mbps) / s.network_reference_ms
    return (
        s.weight_cpu * cpu
        + s.weight_memory * clean_fraction(m.memory)
        + s.weight_xpu * xpu_est
        + s.weight_network * net
        + s.weight_slots * used
        + s.weight_queue * queue_ms / s.network_reference_ms
    )


class LoadGreedy:
    """Lowest load score wins; near-ties (within 1e-9) go to a random one of them, not the first."""

    name = "load"
    weighs_queues = True  #: its score counts the wait in a device's prefetch queue

    def __init__(self, settings: SchedulingSettings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device:
        scored = [(load_score(d, task.size_bytes, self._settings), d) for d in candidates]
        best = min(score for score, _ in scored)
        tied = [d for score, d in scored if score <= best + 1e-9]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


class EarliestCompletion:
    """``ect``: the device where the task is expected to finish first.

    expected = wait for a slot + payload ÷ measured bandwidth + round trip + service time, the
    service time learnt per (task type, device type) as a moving average and seeded from the
    board's profile until measured. It also weighs busy devices: when a fast one that is about
    to free a slot beats every idle one, the task waits for it. Near-ties go to a random one of
    them, so a burst does not herd onto one device.
    """

    name = "ect"
    considers_busy = True

    def __init__(self, settings: SchedulingSettings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng
        self._times = ServiceTimes()

    def bind(self, times: ServiceTimes) -> None:
        self._times = times

    def expected_ms(self, task: Task, device: Device) -> float:
        scale = _float(device.info.get("time_scale"), 1.0)
        service = self._times.estimate(task.task_type, device.device_type, scale)
        slots = max(1, device.slots)
        # tasks ahead of this one (running, and those that chose to wait here this round): the
        # first slot frees after about service / (slots + 1) when progress is spread evenly,
        # each further one takes service / slots more
        backlog = len(device.inflight) + device.reserved - slots + 1
        wait = 0.0 if backlog <= 0 else service / (slots + 1) + (backlog - 1) * service / slots
        transfer = network_ms(device, task.size_bytes, self._settings.assumed_bandwidth_mbps)
        if device.openings > 0:
            # sent now, the payload travels while the tasks ahead of it run
            return max(wait, transfer) + service
        return wait + transfer + service

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device:
        scored = [(self.expected_ms(task, d), d) for d in candidates]
        best = min(score for score, _ in scored)
        tied = [d for score, d in scored if score <= best * 1.02 + 1e-9]
        free = [d for d in tied if d.free_slots > 0] or [d for d in tied if d.openings > 0] or tied
        return free[0] if len(free) == 1 else self._rng.choice(free)


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


StrategyFactory = Callable[[SchedulingSettings, random.Random], Strategy]

STRATEGIES: dict[str, StrategyFactory] = {
    "roundrobin": RoundRobin,
    "load": LoadGreedy,
    "ect": EarliestCompletion,
}

#: Other spellings users of the seed send (``?stargety=负载贪心``).
ALIASES = {"round_robin": "roundrobin", "负载贪心": "load", "": "load"}


def canonical_strategy(name: str) -> str:
    """The registered name for ``name`` or its alias; UnknownPluginError lists the known ones."""
    key = ALIASES.get(name.strip(), name.strip())
    if key not in STRATEGIES:
        known = [*STRATEGIES, *(a for a in ALIASES if a)]
        raise UnknownPluginError("strategy", name, known)
    return key


def make_strategy(name: str, settings: SchedulingSettings, rng: random.Random) -> Strategy:
    return STRATEGIES[canonical_strategy(name)](settings, rng)
