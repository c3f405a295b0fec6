"""What a simulation runs: devices and their links, tasks, and the makespan's lower bound.

Plain frozen values, so one scenario can be run through every strategy unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from edgesched.agent.emulation import Profile
from edgesched.agent.pacing import BandwidthTrace
from edgesched.config import SchedulingSettings


def sub_seed(seed: int, *parts: str) -> int:
    """A stable integer seed for one part of a scenario (``hash()`` changes per process)."""
    return zlib.crc32("/".join([str(seed), *parts]).encode())


@dataclass(frozen=True)
class Link:
    """A device's downlink from the master: a seeded, piecewise-constant bandwidth trace (the
    agent's ``--bandwidth-fluctuate``; ``low_mbps == high_mbps`` is a fixed rate) and a round
    trip time."""

    low_mbps: float
    high_mbps: float
    step_s: float = 0.5
    rtt_ms: float = 2.0

    def trace(self, seed: int) -> BandwidthTrace:
        return BandwidthTrace(seed, self.step_s, self.low_mbps, self.high_mbps)

    @property
    def mean_mbps(self) -> float:
        """What a link busy all the time carries on average."""
        return (self.low_mbps + self.high_mbps) / 2

    @property
    def harmonic_mbps(self) -> float:
        """What one short transfer's expected time is made of: E[1 / rate] over the range."""
        if self.high_mbps - self.low_mbps < 1e-9:
            return self.low_mbps
        return (self.high_mbps - self.low_mbps) / math.log(self.high_mbps / self.low_mbps)


def transfer_end(trace: BandwidthTrace, start: float, nbytes: int) -> float:
    """When ``nbytes`` started at ``start`` have arrived, the rate changing at each step."""
    bits = nbytes * 8.0
    t = start
    while True:
        # the index and the step's end come from one floor, so a boundary never loops
        index = math.floor(t / trace.step_s + 1e-9)
        rate = trace.values[index % len(trace.values)] * 1e6
        room = ((index + 1) * trace.step_s - t) * rate
        if bits <= room:
            return t + bits / rate
        bits -= room
        t = (index + 1) * trace.step_s


@dataclass(frozen=True)
class SimDevice:
    id: str
    profile: Profile  #: service times (lognormal median/p95) and slots, as emulated agents pace
    link: Link
    slots: int = 0  #: 0: the profile's
    #: it fails then: no more beats, its running tasks are lost. As the link goes: a board that
    #: hangs or loses power behind a NAT (``link_lost`` False: silent, its link stays up, the
    #: master notices the missing beats) or an agent killed (True: its link breaks at once)
    fails_at: float | None = None
    link_lost: bool = False
    #: a straggler: tasks starting in [slow_from, slow_from + slow_for) take slow_factor × longer
    slow_factor: float = 1.0
    slow_from: float = 0.0
    slow_for: float = 0.0

    def slow_at(self, t: float) -> float:
        """The factor on a task's service time that starts at ``t``."""
        if self.slow_for > 0 and self.slow_from <= t < self.slow_from + self.slow_for:
            return self.slow_factor
        return 1.0

    @property
    def slot_count(self) -> int:
        return self.slots or self.profile.slots

    @property
    def mean_service_s(self) -> float:
        """The lognormal's mean, not its median: what capacity is made of."""
        return self.profile.median_ms * math.exp(self.profile.sigma**2 / 2) / 1000


@dataclass(frozen=True)
class SimTask:
    id: str
    size_bytes: int
    work: float = 1.0  #: multiplies the sampled service time
    at: float = 0.0  #: submission time
    task_type: str = "layout"


@dataclass(frozen=True)
class Scenario:
    devices: tuple[SimDevice, ...]
    tasks: tuple[SimTask, ...]
    master_mbps: float = 1000.0  #: the master's own uplink, shared by every transfer
    seed: int = 1
    settings: SchedulingSettings = field(default_factory=SchedulingSettings)
    time_scale: float = 1.0  #: every service time times this (the agents' --time-scale)


@dataclass(frozen=True)
class Bound:
    """LB = max(Σ work ÷ Σ capacity, the latest a task can end at best (its arrival plus its best
    time), Σ bytes ÷ the master's rate).

    A device's capacity is its slots over its mean service time (lognormal means, so a lucky run
    may end a little below the bound). Device links are not in it, as the issue defines it.

    ``links_s`` is not part of the bound: the same Σ ÷ Σ with each device's rate also capped by
    what its link carries on average (mean payload). It shows how much of the gap the device
    links alone explain; a strategy that sends small payloads down slow links can beat it a bit.
    """

    compute_s: float
    single_task_s: float
    master_link_s: float
    links_s: float

    @property
    def value_s(self) -> float:
        return max(self.compute_s, self.single_task_s, self.master_link_s)

    def as_dict(self) -> dict[str, float]:
        return {
            "compute_s": self.compute_s,
            "single_task_s": self.single_task_s,
            "master_link_s": self.master_link_s,
            "links_s": self.links_s,
        }


def lower_bound(scenario: Scenario) -> Bound:
    # one that fails still worked until then: counting it keeps the bound a bound
    devices = scenario.devices
    tasks = scenario.tasks
    master_bps = scenario.master_mbps * 1e6
    work = sum(t.work for t in tasks) * scenario.time_scale
    capacity = sum(d.slot_count / d.mean_service_s for d in devices)  # work units per second

    def best_s(task: SimTask) -> float:  # from its submission
        # frame out, payload at the best rate the link and the master allow, service, result back
        return min(
            d.link.rtt_ms / 1000
            + task.size_bytes * 8 / min(d.link.high_mbps * 1e6, master_bps)
            + task.work * scenario.time_scale * d.mean_service_s
            for d in devices
        )

    bits = sum(t.size_bytes for t in tasks) * 8
    return Bound(
        compute_s=work / capacity,
        # a task submitted late ends no sooner than its arrival plus its best time
        single_task_s=max((t.at + best_s(t) for t in tasks), default=0.0),
        master_link_s=bits / master_bps,
        links_s=_links_estimate(scenario, work, bits),
    )


def _links_estimate(scenario: Scenario, work: float, bits: float) -> float:
    """Work ÷ Σ min(compute rate, link rate), both in work units per second."""
    if not work:
        return 0.0
    bits_per_work = bits / work  # a mean payload per unit of work
    rate = sum(
        min(d.slot_count / d.mean_service_s, d.link.mean_mbps * 1e6 / bits_per_work)
        for d in scenario.devices
    )
    return max(work / rate, bits / (scenario.master_mbps * 1e6))
