"""Prometheus metrics of one master: its own registry (no global state), read at scrape time.

Counters and histograms are fed as tasks end; gauges (tasks by state, queue depth, per-device
figures) are computed from the live state when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgesched.clock import Clock
from edgesched.core.core import Core
from edgesched.core.state import TaskState
from edgesched.stages import STAGES


class LiveSource(Protocol):
    """What the gauges read at scrape time: the master (a protocol, so metrics need not
    import it)."""

    @property
    def core(self) -> Core: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def finished_total(self) -> dict[str, int]: ...


#: seconds, from a fast board's milliseconds to a slow link's minutes
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: seconds one heartbeat takes to handle on the master, from tens of microseconds up
HEARTBEAT_BUCKETS = (25e-6, 50e-6, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1, 1)


class MasterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage = Histogram(
            "edgesched_stage_seconds",
            "Duration of a task's stage (queue_wait, transfer, inference, result_return, "
            "delivery, end_to_end)",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._stages: list[tuple[str, Any]] = []  #: (timing key, the stage's child)
        self.finished = Counter(
            "edgesched_tasks_finished",
            "Tasks that reached a final state",
            ["state"],
            registry=self.registry,
        )
        self.heartbeat = Histogram(
            "edgesched_heartbeat_handling_seconds",
            "Time the master takes to handle one agent heartbeat (metrics, ack, dispatch)",
            buckets=HEARTBEAT_BUCKETS,
            registry=self.registry,
        )

    def observe_done(self, timings: dict[str, Any]) -> None:
        if not self._stages:  # each stage's child once: ``labels`` per task was a hot spot
            self._stages = [(f"{s}_ms", self.stage.labels(s)) for s in STAGES if s != "delivery"]
        for key, child in self._stages:
            value = timings.get(key)
            if isinstance(value, (int, float)) and value >= 0:
                child.observe(value / 1000)

    def observe_delivery(self, delivery_ms: float) -> None:
        self.stage.labels("delivery").observe(max(0.0, delivery_ms) / 1000)

    def attach(self, master: LiveSource) -> None:
        self.registry.register(_LiveState(master))


class _LiveState(Collector):
    def __init__(self, master: LiveSource) -> None:
        self.master = master

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        master = self.master
        core = master.core
        now = master.clock.monotonic()
        tasks = GaugeMetricFamily("edgesched_tasks", "Unfinished tasks by state", labels=["state"])
        by_state: dict[str, int] = {}
        for task in core.tasks.values():
            by_state[task.state.value] = by_state.get(task.state.value, 0) + 1
        for state in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING):
            tasks.add_metric([state.value], by_state.get(state.value, 0))
        yield tasks
        yield GaugeMetricFamily(
            "edgesched_queue_depth", "Tasks waiting in the master's queue", core.queue_depth()
        )
        yield GaugeMetricFamily(
            "edgesched_retries", "Attempts re-queued since start (any cause)", core.retries
        )
        yield GaugeMetricFamily(
            "edgesched_dead_tasks",
            "Tasks that ended dead since start",
            master.finished_total.get(TaskState.DEAD.value, 0),
        )
        hedges = CounterMetricFamily(
            "edgesched_hedges",
            "Hedged attempts: started, won (the hedge's result was accepted), lost (the "
            "original's was)",
            labels=["outcome"],
        )
        hedges.add_metric(["started"], core.hedges_started)
        hedges.add_metric(["won"], core.hedges_won)
        hedges.add_metric(["lost"], core.hedges_lost)
        yield hedges
        yield CounterMetricFamily(
            "edgesched_hedge_wasted_seconds",
            "Running time of the attempts a winning attempt ended (the master's view)",
            core.hedge_wasted_ms / 1000,
        )
        per_device = {
            "cpu": ("edgesched_device_cpu", "CPU utilisation (fraction)"),
            "memory": ("edgesched_device_memory", "Memory utilisation (fraction)"),
            "xpu": ("edgesched_device_xpu", "NPU/GPU utilisation (fraction; absent if unknown)"),
            "bandwidth": ("edgesched_device_bandwidth_mbps", "Measured link bandwidth"),
            "latency": ("edgesched_device_latency_ms", "Heartbeat round trip"),
            "free_slots": ("edgesched_device_free_slots", "Slots free for new tasks"),
            "age": ("edgesched_device_heartbeat_age_seconds", "Time since the last frame"),
            "up": ("edgesched_device_up", "1 when the device is online"),
        }
        families = {
            key: GaugeMetricFamily(name, text, labels=["device", "type"])
            for key, (name, text) in per_device.items()
        }
        for device in core.devices.values():
            labels = [device.id, device.device_type]
            m = device.metrics
            families["cpu"].add_metric(labels, m.cpu)
            families["memory"].add_metric(labels, m.memory)
            if m.xpu >= 0:
                families["xpu"].add_metric(labels, m.xpu)
            families["bandwidth"].add_metric(labels, m.bandwidth_mbps)
            families["latency"].add_metric(labels, m.latency_ms)
            families["free_slots"].add_metric(labels, device.free_slots)
            families["age"].add_metric(labels, max(0.0, now - device.last_seen))
            families["up"].add_metric(labels, 1.0 if device.state.value == "online" else 0.0)
        yield from families.values()
