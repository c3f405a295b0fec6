"""The collector's policy with in-memory probes and a hand-driven clock: intervals, merging,
staleness, failures and degradation. No subprocess, no sleeping on timings."""

from __future__ import annotations

import threading

import pytest

from edgesched.agent.probes import ProbeCollector, ProbeEnv, ProbeError, Sample
from edgesched.agent.probes.base import Probe


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeProbe(Probe):
    name = "fake"
    min_interval_s = 1.0

    def __init__(self, results: list[Sample | Exception], name: str = "fake") -> None:
        super().__init__(ProbeEnv())
        self.name = name  # type: ignore[misc]
        self.results = results
        self.calls = 0

    @classmethod
    def detect(cls, env: ProbeEnv) -> bool:
        return True

    def sample(self) -> Sample:
        result = self.results[min(self.calls, len(self.results) - 1)]
        self.calls += 1
        if isinstance(result, Exception):
            raise result
        return result


def settle(collector: ProbeCollector) -> None:
    """Waits for the calls started by the last poll() to finish."""
    assert collector.wait_ready(10.0)
    for _ in range(200):
        if all(s.in_flight_s is None for s in collector.states().values()):
            return
        threading.Event().wait(0.01)
    raise AssertionError("a call did not finish")


def test_min_interval_and_staleness() -> None:
    clock = Clock()
    probe = FakeProbe([Sample(xpu_util=0.5)])
    collector = ProbeCollector([probe], clock=clock, timeout_s=1.0)
    collector.poll()
    settle(collector)
    clock.now = 0.5
    collector.poll()  # not due yet: min_interval_s is 1.0
    settle(collector)
    assert probe.calls == 1
    clock.now = 1.0
    collector.poll()
    settle(collector)
    assert probe.calls == 2
    sample, sources = collector.latest()
    assert sample.xpu_util == 0.5 and sources == {"xpu_util": "fake"}
    assert sample.source == "fake"  # the collector labels samples with the probe's name
    clock.now = 1.0 + 3 * 1.0 + 1.0 + 0.01  # past max_age: 3 intervals + the timeout
    assert collector.latest()[0].is_empty()
    assert collector.states()["fake"].age_s == pytest.approx(4.01)


def test_chain_order_decides_each_field() -> None:
    clock = Clock()
    npu = FakeProbe([Sample(xpu_util=0.2, temperature_c=None)], name="npu")
    host = FakeProbe([Sample(cpu=0.3, xpu_util=0.9, temperature_c=50.0)], name="host")
    collector = ProbeCollector([npu, host], clock=clock)
    collector.poll()
    settle(collector)
    sample, sources = collector.latest()
    assert (sample.xpu_util, sample.cpu, sample.temperature_c) == (0.2, 0.3, 50.0)
    assert sources == {"xpu_util": "npu", "cpu": "host", "temperature_c": "host"}


def test_failures_degrade_back_off_and_recover() -> None:
    clock = Clock()
    probe = FakeProbe(
        [ProbeError("npu-smi: not found"), ValueError("bad table"), Sample(power_w=3.0)]
    )
    collector = ProbeCollector([probe], clock=clock, degrade_after=2)
    collector.poll()
    settle(collector)
    state = collector.states()["fake"]
    assert (state.failures, state.degraded, state.last_error) == (1, False, "npu-smi: not found")
    clock.now = 2.0  # one failure doubles the interval to 2 s
    collector.poll()
    settle(collector)
    state = collector.states()["fake"]
    assert state.degraded and state.last_error == "ValueError: bad table"
    clock.now = 5.0  # two failures: 4 s after the last start at 2.0 is not reached yet
    collector.poll()
    settle(collector)
    assert probe.calls == 2
    clock.now = 6.0
    collector.poll()
    settle(collector)
    state = collector.states()["fake"]
    assert (state.ok, state.consecutive_failures, state.degraded) == (1, 0, False)
    assert collector.latest()[0].power_w == 3.0


def test_probe_reported_degradation_is_shown() -> None:
    probe = FakeProbe([Sample(memory=0.5)])
    probe.degraded_reason = "debugfs: permission denied"
    collector = ProbeCollector([probe], clock=Clock())
    collector.poll()
    settle(collector)
    state = collector.states()["fake"]
    assert state.degraded and state.reason == "debugfs: permission denied"
    assert probe.static_info()["degraded"] == "debugfs: permission denied"


def test_latest_does_not_wait_for_a_blocked_probe() -> None:
    release = threading.Event()

    class Blocked(FakeProbe):
        def sample(self) -> Sample:
            release.wait(10.0)
            return Sample(cpu=1.0)

    clock = Clock()
    collector = ProbeCollector([Blocked([])], clock=clock, timeout_s=1.0)
    collector.poll()
    clock.now = 2.0
    sample, _ = collector.latest()  # returns although sample() is still blocked
    state = collector.states()["fake"]
    assert sample.is_empty() and state.degraded and state.in_flight_s == 2.0
    collector.poll()  # never a second call while one is in flight
    release.set()
    settle(collector)
    assert collector.latest()[0].cpu == 1.0
    collector.close()
