"""The ect strategy: earliest expected completion, learning service times, waiting for a fast
device that is about to free a slot."""

from __future__ import annotations

import random

from edgesched.config import SchedulingSettings
from edgesched.core.commands import Assign, Command, accepted
from edgesched.core.core import Core
from edgesched.core.state import Device, Task
from edgesched.core.strategies import EarliestCompletion, make_strategy


def core(**overrides: int) -> Core:
    settings = SchedulingSettings(**overrides)  # type: ignore[arg-type]
    return Core(settings, make_strategy("ect", settings, random.Random(0)), random.Random(0))


def device(name: str, kind: str, slots: int = 1) -> Device:
    return Device(id=name, device_type=kind, slots=slots, task_types=frozenset({"layout"}))


def submit(c: Core, n: int, now: float = 0.0) -> None:
    for i in range(n):
        c.submit(Task(id=f"t{i}", task_type="layout", size_bytes=1000, submitted_at=now), now)


def placed(commands: list[Command]) -> list[tuple[str, str]]:
    return [(c.task.id, c.device_id) for c in commands if isinstance(c, Assign)]


def test_the_profile_seeds_the_estimate_until_measured() -> None:
    c = core()
    times = c.service_times
    assert times.estimate("layout", "orin") == 5.0
    assert times.estimate("layout", "rk3588", time_scale=10) == 400.0
    times.observe("layout", "orin", 50.0)
    assert times.estimate("layout", "orin") == 50.0 and times.measured("layout", "orin")
    times.observe("layout", "orin", 100.0)
    assert times.estimate("layout", "orin") == 60.0  # a moving average


def test_a_fast_busy_device_beats_a_slow_idle_one_until_its_queue_is_long() -> None:
    c = core(prefetch=0)
    c.register(device("fast", "orin"), [], [], 0.0)  # 5 ms a task
    c.register(device("slow", "atlas310"), [], [], 0.0)  # 25 ms a task
    submit(c, 12)
    first = placed(c.dispatch(0.0))
    # t0 takes the fast board; t1..t4 would still finish sooner by waiting for it (5 ms each)
    # than on the slow one (25 ms); t5 would not, so it runs on the slow board at once
    assert first == [("t0", "fast"), ("t5", "slow")]
    assert c.queue_depth() == 10


def test_with_prefetch_the_fast_device_also_takes_queued_tasks_first() -> None:
    c = core(prefetch=2)
    c.register(device("fast", "orin"), [], [], 0.0)
    c.register(device("slow", "atlas310"), [], [], 0.0)
    submit(c, 12)
    first = placed(c.dispatch(0.0))
    # the orin takes its slot and its two prefetch places (payloads travel while t0 runs);
    # t3, t4 (and t6, t7) still finish sooner by waiting for it than on the atlas (25 ms)
    assert first == [("t0", "fast"), ("t1", "fast"), ("t2", "fast"), ("t5", "slow"), ("t8", "slow")]


def test_expected_completion_adds_transfer_and_wait() -> None:
    settings = SchedulingSettings()
    ect = EarliestCompletion(settings, random.Random(0))
    d = device("d", "orin", slots=2)
    d.metrics.bandwidth_mbps = 8.0  # 1 MB takes 1000 ms
    task = Task(id="t", task_type="layout", size_bytes=1_000_000, submitted_at=0.0)
    assert ect.expected_ms(task, d) == 1000.0 + 5.0
    d.inflight = {("a", 1), ("b", 1)}  # both slots busy: the first frees in about 5 / 3 ms
    assert abs(ect.expected_ms(task, d) - (1000.0 + 5.0 + 5.0 / 3)) < 1e-9


def test_ect_is_registered_and_learns_from_results() -> None:
    c = core()
    c.register(device("d", "orin"), [], [], 0.0)
    submit(c, 1)
    (assign,) = [x for x in c.dispatch(0.0) if isinstance(x, Assign)]
    ok = accepted(c.done(assign.task.id, assign.attempt, "d", 42.0, 1.0), assign.task.id)
    assert ok and c.service_times.estimate("layout", "orin") == 42.0
