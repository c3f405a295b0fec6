"""The emulated straggler: a window in which emulated service times are multiplied (the
``bench straggler`` scenario slows one board 10× this way)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from edgesched.agent.backends.raw import NoopBackend
from edgesched.agent.emulation import SlowWindow, get_profile, slow_window
from edgesched.agent.receiver import Received
from edgesched.agent.runner import Runner
from edgesched.config import TaskTypeSettings, load_settings
from edgesched.errors import ConfigError
from edgesched.wire import link


def test_the_factor_holds_only_inside_the_window() -> None:
    window = SlowWindow(factor=10.0, after_s=5.0, for_s=3.0, origin=100.0)
    assert window.factor_at(100.0) == 1.0
    assert window.factor_at(104.99) == 1.0
    assert window.factor_at(105.0) == 10.0
    assert window.factor_at(107.99) == 10.0
    assert window.factor_at(108.0) == 1.0  # the window is half open
    assert window.factor_at(1e6) == 1.0


@pytest.mark.parametrize(("factor", "for_s"), [(1.0, 10.0), (10.0, 0.0), (10.0, -1.0)])
def test_no_window_when_the_settings_ask_for_none(factor: float, for_s: float) -> None:
    assert slow_window(factor, 0.0, for_s, 0.0) is None


def test_the_settings_are_checked() -> None:
    assert load_settings(None, env={}).agent.slow_factor == 1.0
    with pytest.raises(ConfigError, match="slow_factor"):
        load_settings(None, env={"EDGESCHED_AGENT_SLOW_FACTOR": "0"})
    with pytest.raises(ConfigError, match="slow_for_s"):
        load_settings(None, env={"EDGESCHED_AGENT_SLOW_FOR_S": "-1"})


async def paced_s(slow: SlowWindow | None, monkeypatch: pytest.MonkeyPatch) -> float:
    """How long the runner paces one task (its sleep is recorded, not slept)."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, result: object = None) -> object:
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", record)  # the runner's asyncio is this one
    sent: list[link.AgentMessage] = []
    backend = NoopBackend({"raw": TaskTypeSettings(kind="raw", model="")})
    # a time scale so large that the backend's own time is nothing beside the target
    runner = Runner(backend, 1, sent.append, get_profile("rk3588"), random.Random(7), 1000.0, slow)
    try:
        assignment = link.Assignment(task_id="t1", attempt=1, task_type="raw")
        runner.start(Received(assignment, b"x", 0, 0))
        for _ in range(100):
            if slept:
                break
            await real_sleep(0)
        await runner.wait_idle(10.0)
    finally:
        runner.shutdown()
        monkeypatch.undo()
    assert len(slept) == 1, slept
    return slept[0]


async def test_a_task_starting_in_the_window_is_paced_factor_times_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    normal = await paced_s(None, monkeypatch)
    now = time.monotonic()
    slowed = await paced_s(SlowWindow(10.0, 0.0, 3600.0, origin=now - 1), monkeypatch)
    before = await paced_s(SlowWindow(10.0, 3600.0, 60.0, origin=now), monkeypatch)
    assert normal > 1.0  # rk3588's ~40 ms × 1000: seconds (recorded, not slept)
    assert slowed == pytest.approx(10 * normal, abs=1.0)
    assert before == pytest.approx(normal, abs=0.1)
