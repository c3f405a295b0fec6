"""The agent: dials the master, keeps the link, runs what it is given, returns every result.

One link at a time; when it breaks the agent dials again with capped, jittered backoff.
Results finished while the link is down wait in the outbox and go first on the next link.
The work is split: ``device`` (which board), ``session`` (the link, registration, delivery,
drain), ``link`` (TLS and the channel), ``registration``, ``heartbeat``, ``receiver`` (payloads,
bandwidth), ``runner`` (slots, running a task, its result), ``outbox``, ``pacing``, ``churn``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path

from edgesched.agent.backends import Backend, make_backend
from edgesched.agent.churn import run_with_churn
from edgesched.agent.device import detect_device, slot_count
from edgesched.agent.emulation import Profile, SlotMeter, get_profile, slow_window
from edgesched.agent.heartbeat import Heartbeats
from edgesched.agent.identity import Identity
from edgesched.agent.outbox import Outbox
from edgesched.agent.pacing import BandwidthTrace, Pacer
from edgesched.agent.probes import ProbeCollector
from edgesched.agent.receiver import Receiver
from edgesched.agent.registration import register_message
from edgesched.agent.runner import Runner
from edgesched.agent.session import Session
from edgesched.config import Settings
from edgesched.wire import link

log = logging.getLogger("edgesched.agent")


class Agent:
    """One board's agent: builds its parts from the settings and runs them until stopped.

    Owns the parts' lifetimes: the probes (started and closed here), the backend (warmed before
    each membership), the worker threads (shut down at the end). It may not touch what the parts
    own: the link and delivery are the session's, the tasks the runner's, payloads the receiver's;
    it reads them only through the properties below (which tests and tools use)."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        a = settings.agent
        self.profile: Profile | None = get_profile(a.emulate) if a.emulate else None
        self.device_type, chain = detect_device(a.device_type, self.profile)
        self.probes = ProbeCollector(chain, timeout_s=10.0)
        self.backend: Backend = make_backend(settings, self.device_type)
        self.slots = slot_count(a.slots, self.device_type, self.profile)
        self.rng = rng or random.Random(a.seed or None)
        self.outbox = Outbox(Path(a.data_dir) / "outbox")
        trace = BandwidthTrace(a.seed or 1, a.bandwidth_step_s) if a.bandwidth_fluctuate else None
        self.pacer = Pacer(a.bandwidth_limit_mbps, trace)
        slow = slow_window(a.slow_factor, a.slow_after_s, a.slow_for_s, time.monotonic())
        if slow is not None:
            # a warning: an emulated straggler on purpose must not pass unseen; the straggler
            # benchmark reads the window from it (CLOCK_MONOTONIC is one clock for the machine)
            log.warning(
                "emulated straggler: service times ×%g from monotonic %.3f to %.3f",
                slow.factor,
                slow.origin + slow.after_s,
                slow.origin + slow.after_s + slow.for_s,
            )
        self.runner = Runner(
            self.backend, self.slots, self._send, self.profile, self.rng, a.time_scale, slow
        )
        self.receiver = Receiver()
        self.heartbeats = Heartbeats(self.probes, self.runner.meter, self.profile, self.rng)
        self.session = Session(
            a,
            Identity.load(a.data_dir),
            self._register,
            self.runner,
            self.receiver,
            self.heartbeats,
            self.outbox,
            self.pacer,
            self.rng,
        )

    # ---- what the parts hold, for tests and tools ------------------------------------------

    @property
    def identity(self) -> Identity:
        return self.session.identity

    @property
    def connected(self) -> asyncio.Event:
        return self.session.connected

    @property
    def session_no(self) -> int:
        return self.session.session_no

    @property
    def draining(self) -> bool:
        return self.session.draining

    @property
    def running(self) -> dict[str, tuple[int, asyncio.Task[None]]]:
        return self.runner.running

    @property
    def meter(self) -> SlotMeter:
        return self.runner.meter

    @property
    def latency_ms(self) -> float:
        return self.heartbeats.latency_ms

    @property
    def bandwidth_mbps(self) -> float:
        return self.receiver.bandwidth_mbps

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keeps a link to the master until ``stop`` is set."""
        self.probes.start()
        try:
            a = self.settings.agent
            await run_with_churn(
                self._member,
                stop,
                a.disconnect_s,
                a.reconnect_s,
                self.session.connected,
                self.session.rejoin,
            )
        finally:
            self.probes.close()
            self.runner.shutdown()

    async def _member(self, stop: asyncio.Event) -> None:
        """One membership: the backend warmed, then linked until leaving."""
        await asyncio.to_thread(self.backend.warm)
        await self.session.keep_linked(stop)

    def _send(self, message: link.AgentMessage) -> None:
        self.session.send(message)

    def _register(self, identity: Identity, session: int) -> link.AgentMessage:
        return register_message(
            self.settings.agent,
            identity,
            self.device_type,
            self.profile,
            self.backend,
            self.probes,
            self.slots,
            sorted(self.runner.running),
            self.outbox.finished_task_ids(),
            session,
        )
