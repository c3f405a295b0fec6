"""The scheduling core: events in, commands out. Pure: no I/O, no event loop, time is an argument.

The asyncio shell (``edgesched.master``) turns what happens on the wire into calls of this class
and carries out the commands it returns: sending assignments and cancels, writing the journal,
telling clients. Everything the core decides can therefore be tested with plain function calls.

The core is built in layers, one job per module: ``base`` (the shared state), ``attempts``
(tasks, attempts, retries, deadlines), ``devices`` (the registry), ``health`` (what time does
to devices and tasks) and ``dispatch`` (placement).
"""

from __future__ import annotations

import random

from edgesched.config import SchedulingSettings
from edgesched.core.dispatch import Dispatch
from edgesched.core.strategies import Strategy


class Core(Dispatch):
    """The facade the shell calls. Owns all scheduling state (tasks not yet final, devices,
    queues, deadlines, service-time estimates). Every event method takes the time as ``now``
    and returns ``list[Command]`` for the shell to carry out; a caller needing a device or a
    task reads it from ``devices`` / ``tasks``. It may not do I/O, read a clock, or keep
    finished tasks (they live in the journal)."""

    def __init__(
        self, settings: SchedulingSettings, strategy: Strategy, rng: random.Random
    ) -> None:
        super().__init__(settings, strategy, rng)
        self._bind(strategy)
