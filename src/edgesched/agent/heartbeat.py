"""Heartbeats: the board's figures every interval, and the round trip their acks measure."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Optional

from edgesched.agent.emulation import Profile, SlotMeter
from edgesched.agent.link import SendQueue
from edgesched.agent.probes import ProbeCollector
from edgesched.wire import link


class Heartbeats:
    """Builds heartbeats and reads their acks.

    Owns the sequence numbers, when each recent one left, the last acknowledged one (echoed back)
    and the link latency they measure. It may not touch the tasks, the outbox or the link: what
    it reports of them is handed in by the session."""

    def __init__(
        self,
        probes: ProbeCollector,
        meter: SlotMeter,
        profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
        rng: random.Random,
    ) -> None:
        self.probes = probes
        self.meter = meter
        self.profile = profile
        self.rng = rng
        self.seq = 0
        self.latency_ms = 0.0
        self._sent: dict[int, float] = {}
        self._echo = 0

    def message(
        self,
        free_slots: int,
        running_task_ids: list[str],
        outbox: int,
        draining: bool,
        bandwidth_mbps: float,
    ) -> link.AgentMessage:
        """The next heartbeat: the probes' latest figures (never waiting on a slow probe)."""
        now = time.monotonic()
        sample, sources = self.probes.latest()
        power = float("nan") if sample.power_w is None else sample.power_w
        if self.profile is not None:
            xpu = self.meter.utilisation(now)
            power = self.profile.power_w(xpu)
        else:
            xpu = -1.0 if sample.xpu_util is None else sample.xpu_util
        self.seq += 1
        self._sent[self.seq] = now
        for old in [s for s in self._sent if s < self.seq - 16]:
            del self._sent[old]
        xpu_memory = -1.0
        if sample.xpu_mem_used_mb is not None and sample.xpu_mem_total_mb:
            xpu_memory = sample.xpu_mem_used_mb / sample.xpu_mem_total_mb
        return link.heartbeat(
            seq=self.seq,
            cpu=sample.cpu or 0.0,
            memory=sample.memory or 0.0,
            xpu=xpu,
            xpu_memory=xpu_memory,
            temperature_c=float("nan") if sample.temperature_c is None else sample.temperature_c,
            power_w=power,
            bandwidth_mbps=bandwidth_mbps,
            latency_ms=self.latency_ms,
            probe=f"emulated:{self.profile.name}"
            if self.profile
            else sources.get("xpu_util", sources.get("cpu", "generic")),
            free_slots=free_slots,
            running_task_ids=running_task_ids,
            agent_time_unix_ms=int(time.time() * 1000),
            echo_seq=self._echo,
            outbox=outbox,
            draining=draining,
        )

    def acked(self, seq: int, now: float) -> None:
        """The master read heartbeat ``seq``: echo it, and fold its round trip into the latency."""
        sent = self._sent.pop(seq, None)
        self._echo = seq
        if sent is not None:
            rtt = (now - sent) * 1000
            self.latency_ms = rtt if self.latency_ms == 0 else 0.8 * self.latency_ms + 0.2 * rtt

    async def loop(
        self, interval: float, send_q: SendQueue, build: Callable[[], link.AgentMessage]
    ) -> None:
        """Sends ``build()`` every ``interval`` (jittered down 5%) until cancelled."""
        while True:
            send_q.put_nowait(build())
            await asyncio.sleep(interval * self.rng.uniform(0.95, 1.0))
