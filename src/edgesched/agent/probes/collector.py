"""Polls a probe chain in the background and merges it; the caller never waits on a probe.

Each probe runs in its own worker thread, at most one call at a time and no more often than its
``min_interval_s``. A call that outlives ``timeout_s`` marks the probe degraded while it keeps
running (a Python thread cannot be killed; ``ProbeEnv.run`` kills the child at its own
timeout). ``latest()`` only reads the cache under a short lock, so a hung ``npu-smi`` can never
stall a heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType

from edgesched.agent.probes.base import Probe, ProbeError, Sample, merge_samples


@dataclass(frozen=True)
class ProbeState:
    """What the collector knows about one probe, for status pages and ``edgesched probe``."""

    name: str
    ok: int  #: calls that returned a sample
    failures: int
    consecutive_failures: int
    last_error: str | None
    age_s: float | None  #: age of the cached good sample; None before the first
    in_flight_s: float | None  #: how long the current call has been running
    degraded: bool
    reason: str | None


class _Slot:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.sample: Sample | None = None
        self.sample_at: float | None = None
        self.started_at: float | None = None  # set while a call is in flight
        self.last_start: float | None = None
        self.finished = 0
        self.ok = 0
        self.failures = 0
        self.consecutive = 0
        self.last_error: str | None = None
        self.thread: threading.Thread | None = None


class ProbeCollector:
    def __init__(
        self,
        probes: Sequence[Probe],
        *,
        timeout_s: float = 15.0,
        degrade_after: int = 2,
        max_age_factor: float = 3.0,
        tick_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.degrade_after = degrade_after
        self.max_age_factor = max_age_factor
        self.tick_s = tick_s
        self.clock = clock
        self._slots = [_Slot(p) for p in probes]
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def probes(self) -> list[Probe]:
        return [slot.probe for slot in self._slots]

    def __enter__(self) -> ProbeCollector:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Starts the background ticker; the first round of calls begins at once."""
        if self._ticker is not None:
            return
        self.poll()
        self._ticker = threading.Thread(target=self._tick, name="probe-collector", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.poll()

    def _interval(self, slot: _Slot) -> float:
        # a probe that keeps failing (missing binary, no permission) is retried less often
        return slot.probe.min_interval_s * float(min(2**slot.consecutive, 8))

    def poll(self) -> None:
        """Starts a call for every probe that is due and idle. Returns at once."""
        with self._cond:
            if self._stop.is_set():
                return
            now = self.clock()
            for slot in self._slots:
                if slot.started_at is not None:
                    continue  # one call per probe at a time: npu-smi is never run twice at once
                if slot.last_start is not None and now - slot.last_start < self._interval(slot):
                    continue
                slot.started_at = slot.last_start = now
                slot.thread = threading.Thread(
                    target=self._call, args=(slot,), name=f"probe-{slot.probe.name}", daemon=True
                )
                slot.thread.start()

    def _call(self, slot: _Slot) -> None:
        sample: Sample | None = None
        error: str | None = None
        try:
            sample = slot.probe.sample()
        except ProbeError as exc:
            error = str(exc)
        except Exception as exc:  # a parser bug must not kill the collector
            error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            slot.started_at = None
            slot.finished += 1
            if sample is not None:
                slot.sample = replace(sample, source=slot.probe.name)
                slot.sample_at = self.clock()
                slot.ok += 1
                slot.consecutive = 0
                slot.last_error = None
            else:
                slot.failures += 1
                slot.consecutive += 1
                slot.last_error = error
            self._cond.notify_all()

    def _max_age(self, slot: _Slot) -> float:
        return self.max_age_factor * max(slot.probe.min_interval_s, self.tick_s) + self.timeout_s

    def _overdue(self, slot: _Slot, now: float) -> bool:
        return slot.started_at is not None and now - slot.started_at > self.timeout_s

    def wait_ready(self, timeout_s: float) -> bool:
        """Waits until every probe has finished one call or overran its timeout (one-shot use)."""
        deadline = self.clock() + timeout_s
        with self._cond:
            while True:
                now = self.clock()
                if all(s.finished > 0 or self._overdue(s, now) for s in self._slots):
                    return True
                if now >= deadline:
                    return False
                self._cond.wait(min(deadline - now, 0.05))

    def latest(self) -> tuple[Sample, dict[str, str]]:
        """The merged cached samples (first non-None per field, chain order) and, per field, the
        name of the probe that produced it. Never waits on a probe."""
        with self._cond:
            now = self.clock()
            fresh = [
                s.sample
                for s in self._slots
                if s.sample is not None
                and s.sample_at is not None
                and now - s.sample_at <= self._max_age(s)
            ]
        return merge_samples(fresh)

    def states(self) -> dict[str, ProbeState]:
        with self._cond:
            now = self.clock()
            return {slot.probe.name: self._state(slot, now) for slot in self._slots}

    def _state(self, slot: _Slot, now: float) -> ProbeState:
        reason: str | None = None
        if self._overdue(slot, now):
            reason = f"call running for more than {self.timeout_s:g}s"
        elif slot.consecutive >= self.degrade_after:
            reason = f"{slot.consecutive} failures in a row: {slot.last_error}"
        elif slot.probe.degraded_reason:
            reason = slot.probe.degraded_reason
        return ProbeState(
            name=slot.probe.name,
            ok=slot.ok,
            failures=slot.failures,
            consecutive_failures=slot.consecutive,
            last_error=slot.last_error,
            age_s=now - slot.sample_at if slot.sample_at is not None else None,
            in_flight_s=now - slot.started_at if slot.started_at is not None else None,
            degraded=reason is not None,
            reason=reason,
        )

    def close(self, wait_s: float = 1.0) -> None:
        """Stops polling and closes the probes; does not wait long for a hung call."""
        with self._cond:
            self._stop.set()  # under the lock: no poll() can start a call after this
        if self._ticker is not None:
            self._ticker.join(timeout=wait_s)
            self._ticker = None
        for slot in self._slots:
            try:
                slot.probe.close()
            except Exception:  # closing must reach every probe
                continue
        deadline = time.monotonic() + wait_s
        for slot in self._slots:
            thread = slot.thread
            if thread is not None:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
