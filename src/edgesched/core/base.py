"""The state the core's parts share: unfinished tasks, the device registry, the ready and
delayed queues, the deadline heap, the learnt service times. Pure: no I/O, time is an argument."""

from __future__ import annotations

import random
from collections import deque

from edgesched.config import SchedulingSettings
from edgesched.core.estimates import ServiceTimes
from edgesched.core.state import Device, Task
from edgesched.core.strategies import EarliestCompletion, Strategy


class CoreState:
    """Owns the scheduling state every part of the core reads and changes. Holds no behaviour:
    the parts (attempts, devices, health, dispatch) do, each in its own module; nothing here
    touches the journal, a socket or the event loop."""

    def __init__(
        self, settings: SchedulingSettings, strategy: Strategy, rng: random.Random
    ) -> None:
        self.settings = settings
        self.strategy = strategy
        self.rng = rng
        self.tasks: dict[
            str, Task
        ] = {}  #: unfinished tasks only; finished ones live in the journal
        self.devices: dict[str, Device] = {}
        self._ordered: list[Device] | None = None  #: the devices by id, until one is replaced
        #: the schedulable devices by id, and per task type the able ones by tier; kept until a
        #: device joins, leaves or changes state (every such change goes through this class)
        self._layout: tuple[list[Device], dict[str, list[list[Device]]]] | None = None
        self._reserved: list[Device] = []  #: devices a task chose to wait for, this dispatch
        self._ready: deque[str] = deque()  #: queued tasks that may be dispatched now (FIFO)
        self._delayed: list[tuple[float, int, str]] = []  #: (not_before, seq, task id)
        self._deadlines: list[tuple[float, str, int]] = []  #: (due, task id, attempt)
        self._next_capability_check = 0.0
        self._seq = 0
        self.retries = 0  #: attempts re-queued, any cause (for metrics)
        self._strategies: dict[str, Strategy] = {}
        self.service_times = ServiceTimes()  #: learnt per (task type, device type)
        self.unhedged: frozenset[str] = frozenset()  #: task types that opt out of hedging
        #: (task id, attempt, elapsed) of attempts wanting a hedge; dispatch serves it first
        self._hedge_queue: deque[tuple[str, int, float]] = deque()
        self._hedge_wanted: set[str] = set()  #: the task ids in the hedge queue
        self._hedged: set[str] = set()  #: tasks that may still have a hedge out
        self.hedges_started = 0  #: hedges sent (for metrics)
        self.hedges_won = 0  #: tasks whose accepted result came from a hedge
        self.hedges_lost = 0  #: hedged tasks whose original attempt won
        self.hedge_wasted_ms = 0.0  #: running time of the attempts a winner ended
        self._hedge_ect: EarliestCompletion | None = None  #: made at the first hedge
