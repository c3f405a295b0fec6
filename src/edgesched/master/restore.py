"""Restart recovery: the journal's unfinished tasks and agents' credentials taken back."""

from __future__ import annotations

from collections import Counter

from edgesched.clock import Clock
from edgesched.core.core import Core
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.registry import AgentRegistry
from edgesched.master.rows import task_from_row


async def restore(
    journal: Journal,
    core: Core,
    registry: AgentRegistry,
    rows: dict[str, TaskRow],
    inflight: Counter[str],
    clock: Clock,
) -> int:
    """Takes back every unfinished task from the journal into ``rows``, the clients' in-flight
    counts and the core, and the agents' credentials into the registry. Returns how many
    tasks; the caller runs a dispatch."""
    registry.credentials = await journal.agents()
    now = clock.monotonic()
    unfinished = await journal.unfinished()
    for row in unfinished:
        rows[row.id] = row
        inflight[row.client_id] += 1
        core.restore(task_from_row(row, now, clock), now)
    return len(unfinished)
