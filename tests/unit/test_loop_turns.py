"""Fewer event-loop wake-ups on a sequential round trip (issue 16): the master's pump
dispatches a lone queued task in the turn it was queued in, a burst once more in the next
turn; the agent runs an instant backend (``noop``) in its loop, any other on a worker thread."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any, cast

from edgesched.agent.backends.base import BackendResult
from edgesched.agent.backends.raw import BusyBackend, NoopBackend
from edgesched.agent.receiver import Received
from edgesched.agent.runner import Runner
from edgesched.clock import SystemClock
from edgesched.config import TaskTypeSettings
from edgesched.master.pump import Pump
from edgesched.wire import link


class CountingPump(Pump):
    """A pump whose dispatch only counts (the core, journal and sessions are not needed)."""

    def __init__(self) -> None:
        unused = cast(Any, None)
        super().__init__(unused, unused, unused, {}, unused, SystemClock(), lambda: False)
        self.dispatches = 0

    def pump(self) -> None:
        self.dispatches += 1


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_lone_task_is_dispatched_in_the_turn_it_was_queued_in() -> None:
    pump = CountingPump()
    pump.soon()
    assert pump.dispatches == 1  # no turn has passed
    await next_turn()
    assert pump.dispatches == 1  # and none is left scheduled
    pump.soon()  # the next lone task, turns later: again at once
    assert pump.dispatches == 2


async def test_a_burst_gets_one_more_dispatch_in_the_next_turn() -> None:
    pump = CountingPump()
    for _ in range(50):  # 50 tasks queued in one turn
        pump.soon()
    assert pump.dispatches == 1
    await next_turn()
    assert pump.dispatches == 2  # not 50
    await next_turn()
    assert pump.dispatches == 2


async def test_a_stopping_master_does_not_dispatch() -> None:
    pump = CountingPump()
    pump.stopping = lambda: True
    pump.soon()
    pump.soon()
    await next_turn()
    assert pump.dispatches == 0


class ThreadNoted:
    """Notes the thread each run happens on (a test double around a real backend)."""

    def __init__(self, backend: NoopBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.formats = backend.formats
        self.inline = backend.inline
        self.threads: list[int] = []

    def artefacts(self) -> list[Any]:
        return self.backend.artefacts()

    def warm(self) -> None:
        return None

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        self.threads.append(threading.get_ident())
        return self.backend.run(task_type, payload, task_id)


async def run_one(backend: ThreadNoted) -> list[link.AgentMessage]:
    sent: list[link.AgentMessage] = []
    runner = Runner(backend, 1, sent.append, None, random.Random(1), 1.0)
    try:
        assignment = link.Assignment(task_id="t1", attempt=1, task_type="raw")
        runner.start(Received(assignment, b"x", 0.0, 0.0))
        await runner.wait_idle(10.0)
    finally:
        runner.shutdown()
    return sent


async def test_noop_runs_in_the_event_loop() -> None:
    noop = ThreadNoted(NoopBackend({"raw": TaskTypeSettings(kind="raw", model="")}))
    sent = await run_one(noop)
    assert noop.threads == [threading.get_ident()]
    assert [m.WhichOneof("kind") for m in sent] == ["started", "result"]


async def test_busy_still_runs_on_a_worker_thread() -> None:
    busy = ThreadNoted(BusyBackend({"raw": TaskTypeSettings(kind="raw", model="")}, 0.1))
    sent = await run_one(busy)
    assert len(busy.threads) == 1 and busy.threads[0] != threading.get_ident()
    assert [m.WhichOneof("kind") for m in sent] == ["started", "result"]
