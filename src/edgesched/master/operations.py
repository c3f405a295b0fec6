"""The operators' actions on tasks and devices: drain, undrain, retry, cancel, look up."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from edgesched.clock import Clock
from edgesched.config import Settings
from edgesched.core.core import Core
from edgesched.core.state import Device, TaskState
from edgesched.errors import ConflictError, NotFoundError
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.pump import Pump
from edgesched.master.registry import AgentRegistry
from edgesched.master.rows import task_from_row
from edgesched.wire import link as wire

log = logging.getLogger("edgesched.master")


class Operations:
    """What an operator (the API) may do: drain or undrain a device, retry a dead task,
    cancel one, look one up and say why a queued one waits. A retried task re-enters the
    master's ``rows`` and its client's in-flight count. It may not bypass the core: every
    change is a core event whose commands the pump carries out."""

    def __init__(
        self,
        settings: Settings,
        core: Core,
        journal: Journal,
        registry: AgentRegistry,
        rows: dict[str, TaskRow],
        inflight: Counter[str],
        pump: Pump,
        clock: Clock,
        payload_kept: Callable[[TaskRow], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self.core = core
        self.journal = journal
        self.registry = registry
        self.rows = rows
        self.inflight = inflight
        self.pump = pump
        self.clock = clock
        #: whether a task's payload can still be read back (a file, a live log entry, a row)
        self.payload_kept = payload_kept

    def waiting_note(self, row: TaskRow) -> str:
        """Why a queued task is not running, when the reason is that no device can run it."""
        if row.state != TaskState.QUEUED.value or row.task_type in self.core.capable_types():
            return ""
        ttl = self.settings.scheduling.no_device_ttl_s
        return (
            f"waiting: no online device can run task type {row.task_type!r}; "
            f"it ends dead after {ttl:g} s without one"
        )

    def drain(self, device_id: str, on: bool) -> Device:
        """Drain (or undrain) a device: it finishes what it runs and takes nothing new; the
        agent is told, so it also reports itself draining."""
        self.pump.apply(self.core.drain(device_id, on))  # kept when the agent rejoins
        device = self.core.devices[device_id]
        session = self.registry.sessions.get(device_id)
        if session is not None:
            reason = "drained by an operator" if on else "undrained by an operator"
            session.send_control(wire.drain(on, reason))
        log.info("device %s %s", device_id, "draining" if on else "undrained")
        self.pump.pump()
        return device

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]:
        """Tasks newest first, as they are now. The journal holds a running task as queued
        (an attempt's start is not journaled: ``core.commands.needs_persist``), so unfinished
        tasks come from the master's rows and only finished ones from the journal."""
        if state is not None and not TaskState(state).final:
            rows = [r for r in self.rows.values() if r.state == state]
            rows.sort(key=lambda r: (r.submitted_ms, r.id), reverse=True)
            return rows[offset : offset + limit]
        return [self.rows.get(r.id, r) for r in await self.journal.list_tasks(state, limit, offset)]

    async def counts(self) -> dict[str, int]:
        """Tasks per state, as they are now (see ``list_tasks``)."""
        counts = {
            state: n for state, n in (await self.journal.counts()).items() if TaskState(state).final
        }
        for row in self.rows.values():
            counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    async def get_task(self, task_id: str) -> TaskRow:
        row = self.rows.get(task_id) or await self.journal.get(task_id)
        if row is None:
            raise NotFoundError(f"no task {task_id}")
        return row

    async def retry(self, task_id: str) -> TaskRow:
        """Queues a dead task again, with its failure count reset (its error history stays)."""
        row = await self.get_task(task_id)
        if row.state != TaskState.DEAD.value:
            raise ConflictError(f"task {task_id} is {row.state}; only dead tasks can be retried")
        if not await self.payload_kept(row):
            raise ConflictError(f"task {task_id}: its picture is no longer kept; submit it again")
        now = self.clock.monotonic()
        task = task_from_row(row, now, self.clock)
        row.finished_ms = 0
        row.error = ""
        if row.origin == "seed":
            row.delivery = "pending"
        self.rows[task_id] = row
        self.inflight[row.client_id] += 1
        log.info("task %s retried by request: attempt count reset", task_id)
        self.pump.apply(self.core.retry(task, now))
        self.journal.update(task_id, {"finished_ms": 0, "delivery": row.delivery})
        self.pump.pump()
        return row

    async def cancel(self, task_id: str, reason: str = "cancelled by request") -> TaskRow:
        row = await self.get_task(task_id)
        if task_id not in self.core.tasks:
            raise ConflictError(f"task {task_id} is already {row.state}")
        self.pump.apply(self.core.cancel(task_id, self.clock.monotonic(), reason))
        self.pump.pump()
        return await self.get_task(task_id)
