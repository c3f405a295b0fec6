"""Placement strategies: given a task and candidate devices, pick one. Found by name.

A strategy is a small object with ``choose(task, candidates) -> Device``. Candidates are already
filtered (healthy, not draining, can run the task type, have a free slot) and sorted by id.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgesched.config import SchedulingSettings
from edgesched.core.estimates import ServiceTimes
from edgesched.core.state import Device, Metrics, Task, clean_fraction
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


@dataclass(frozen=True)
class _Reported:
    """The parts of a device's load score that change only with its heartbeat's metrics."""

    metrics: Metrics  #: the report they come from (a heartbeat replaces it)
    base: float  #: w_cpu·cpu + w_mem·mem + w_net·rtt ÷ t_ref
    xpu: float  #: reported XPU utilisation (the CPU's where there is no XPU figure)
    net_per_byte: float  #: w_net·(8 ÷ bandwidth) ÷ t_ref, per payload byte


def _reported(m: Metrics, s: SchedulingSettings) -> _Reported:
    cpu = clean_fraction(m.cpu)
    xpu = clean_fraction(m.xpu) if m.xpu >= 0 else cpu
    bandwidth = m.bandwidth_mbps if m.bandwidth_mbps > 0 else s.assumed_bandwidth_mbps
    ref = s.network_reference_ms
    return _Reported(
        metrics=m,
        base=s.weight_cpu * cpu
        + s.weight_memory * clean_fraction(m.memory)
        + s.weight_network * max(0.0, m.latency_ms) / ref,
        xpu=xpu,
        net_per_byte=s.weight_network * 8 / (bandwidth * 1e6) * 1e3 / ref,
    )


def _score(device: Device, r: _Reported, payload_bytes: int, s: SchedulingSettings) -> float:
    slots = max(1, device.slots)
    held = len(device.inflight)
    xpu_est = min(1.0, r.xpu + device.sent_since_heartbeat / slots)
    # a task sent into the prefetch queue waits for the tasks ahead of it, at the device's pace
    ahead = held - slots + 1
    queue = ahead * device.mean_service_ms / slots / s.network_reference_ms if ahead > 0 else 0.0
    return (
        r.base
        + r.net_per_byte * payload_bytes
        + s.weight_xpu * xpu_est
        + s.weight_slots * min(held, slots) / slots
        + s.weight_queue * queue
    )


def load_score(device: Device, payload_bytes: int, s: SchedulingSettings) -> float:
    """The seed's weighted load score in consistent units; lower is better.

    score = w_cpu·cpu + w_mem·mem + w_xpu·xpu' + w_net·(bytes ÷ bandwidth + rtt) ÷ t_ref
            + w_slots·(slots in use ÷ slots) + w_queue·(expected queue wait ÷ t_ref)

    Utilisations are fractions. ``xpu'`` is the reported XPU utilisation plus one slot's share for
    every task sent since the last heartbeat (optimistic accounting: otherwise a burst herds onto
    the device that looked idle). A device without an XPU figure uses its CPU in that term.
    A device's score never depends on the other candidates.
    """
    return _score(device, _reported(device.metrics, s), payload_bytes, s)


class LoadGreedy:
    """Lowest load score wins; near-ties (within 1e-9) go to a random one of them, not the first.

    What a device's heartbeat reported is scored once per report (kept per device), so a
    decision over a thousand devices costs only the terms that change between reports.
    """

    name = "load"
    weighs_queues = True  #: its score counts the wait in a device's prefetch queue

    def __init__(self, settings: SchedulingSettings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng
        self._reported: dict[str, _Reported] = {}

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device:
        s, cache, size = self._settings, self._reported, task.size_bytes
        best = math.inf
        tied: list[Device] = []
        w_xpu, w_slots, w_queue = s.weight_xpu, s.weight_slots, s.weight_queue
        ref = s.network_reference_ms
        for d in candidates:
            r = cache.get(d.id)
            if r is None or r.metrics is not d.metrics:
                r = cache[d.id] = _reported(d.metrics, s)
            # _score, inlined: this loop runs once per device per decision
            slots = d.slots if d.slots > 0 else 1
            held = len(d.inflight)
            xpu = r.xpu + d.sent_since_heartbeat / slots
            score = (
                r.base
                + r.net_per_byte * size
                + w_xpu * (xpu if xpu < 1.0 else 1.0)
                + w_slots * (held if held < slots else slots) / slots
            )
            if held >= slots:
                score += w_queue * (held - slots + 1) * d.mean_service_ms / slots / ref
            if score < best - 1e-9:
                best, tied = score, [d]
            elif score <= best + 1e-9:
                tied.append(d)
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
        self._links: dict[str, tuple[Metrics, float, float]] = {}  #: per device, per report
        self._grouped: tuple[Sequence[Device], dict[tuple[str, float], list[Device]]] | None = None

    def bind(self, times: ServiceTimes) -> None:
        self._times = times

    def expected_ms(
        self, task: Task, device: Device, service: dict[tuple[str, float], float] | None = None
    ) -> float:
        """``service``: estimates already looked up in this decision, by (device type, scale)."""
        key = (device.device_type, device.time_scale)
        known = service.get(key) if service is not None else None
        if known is None:
            known = self._times.estimate(task.task_type, *key)
            if service is not None:
                service[key] = known
        slots = max(1, device.slots)
        held = len(device.inflight)
        # tasks ahead of this one (running, and those that chose to wait here this round): the
        # first slot frees after about service / (slots + 1) when progress is spread evenly,
        # each further one takes service / slots more
        backlog = held + device.reserved - slots + 1
        wait = 0.0 if backlog <= 0 else known / (slots + 1) + (backlog - 1) * known / slots
        transfer = network_ms(device, task.size_bytes, self._settings.assumed_bandwidth_mbps)
        if held < slots + device.prefetch:  # an opening: sent now, the payload travels while
            return max(wait, transfer) + known  # the tasks ahead of it run
        return wait + transfer + known

    def choose(self, task: Task, candidates: Sequence[Device]) -> Device:
        # expected_ms, inlined (this loop runs once per device per decision; a test holds the
        # two to the same answers). Devices are taken a kind at a time (device type and time
        # scale), fastest kind first: a kind whose bare service time already exceeds the best
        # expected completion by the tie margin cannot win, nor can any slower kind after it.
        links, size = self._links, task.size_bytes
        assumed = self._settings.assumed_bandwidth_mbps
        kinds = sorted(
            (self._times.estimate(task.task_type, *key), key, group)
            for key, group in self._kinds(candidates).items()
        )
        best = math.inf
        near: list[tuple[float, Device]] = []  #: within 2 % of the best seen so far
        for known, _, group in kinds:
            if known > best * 1.02 + 1e-9:
                break
            for d in group:
                link = links.get(d.id)
                if link is None or link[0] is not d.metrics:
                    link = links[d.id] = _link_terms(d.metrics, assumed)
                slots = d.slots if d.slots > 0 else 1
                held = len(d.inflight)
                backlog = held + d.reserved - slots + 1
                wait = 0.0 if backlog <= 0 else known / (slots + 1) + (backlog - 1) * known / slots
                transfer = link[1] * size + link[2]
                if held < slots + d.prefetch:
                    score = (wait if wait > transfer else transfer) + known
                else:
                    score = wait + transfer + known
                if score <= best * 1.02 + 1e-9:
                    if score < best:
                        best = score
                    near.append((score, d))
        tied = sorted((d for score, d in near if score <= best * 1.02 + 1e-9), key=lambda d: d.id)
        free = [d for d in tied if d.free_slots > 0] or [d for d in tied if d.openings > 0] or tied
        return free[0] if len(free) == 1 else self._rng.choice(free)

    def _kinds(self, candidates: Sequence[Device]) -> dict[tuple[str, float], list[Device]]:
        """The candidates by (device type, time scale), each in their order. The core hands the
        same list object until a device changes state, so the grouping is kept for it."""
        cached = self._grouped
        if cached is not None and cached[0] is candidates:
            return cached[1]
        kinds: dict[tuple[str, float], list[Device]] = {}
        for d in candidates:
            kinds.setdefault((d.device_type, d.time_scale), []).append(d)
        self._grouped = (candidates, kinds)
        return kinds


def _link_terms(m: Metrics, assumed_bandwidth_mbps: float) -> tuple[Metrics, float, float]:
    """(the report, ms per payload byte, round trip ms): ``network_ms`` in two numbers."""
    bandwidth = m.bandwidth_mbps if m.bandwidth_mbps > 0 else assumed_bandwidth_mbps
    return m, 8 / (bandwidth * 1e6) * 1e3, max(0.0, m.latency_ms)


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
