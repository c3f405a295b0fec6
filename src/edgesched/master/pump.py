"""Carrying out the core's commands: the dispatch pump, assignments, cancels, journal writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgesched.clock import Clock
from edgesched.core.commands import Assign, CancelAttempt, Command, Expired, Finished, Persist
from edgesched.core.core import Core
from edgesched.journal.base import Journal, TaskRow
from edgesched.kinds import FailureKind
from edgesched.master.ends import TaskEnds
from edgesched.master.registry import AgentRegistry
from edgesched.master.rows import update_row

log = logging.getLogger("edgesched.master")


class Pump:
    """Applies the core's commands and runs its dispatch. Owns the dispatch of an event-loop
    turn: at once for the turn's first queued task, one scheduled for whatever else the turn
    queued. It sends assignments and cancels through the agents' sessions (the registry's),
    writes a task's changes to the journal (the master's ``rows``) and hands a task's end to
    ``TaskEnds``. It may not change the core's state other than through the core's event
    methods, nor add or remove rows (the intake and the operations do), nor open a session
    (the link does)."""

    def __init__(
        self,
        core: Core,
        journal: Journal,
        registry: AgentRegistry,
        rows: dict[str, TaskRow],
        ends: TaskEnds,
        clock: Clock,
        stopping: Callable[[], bool],
    ) -> None:
        self.core = core
        self.journal = journal
        self.registry = registry
        self.rows = rows
        self.ends = ends
        self.clock = clock
        self.stopping = stopping
        #: a dispatch is scheduled for the next turn (it takes everything queued until then)
        self.scheduled = False
        #: soon() dispatched at once in this turn; further calls wait for the scheduled one
        self.pumped_this_turn = False

    def soon(self) -> None:
        """Dispatches a task that was just queued. The first call of an event-loop turn
        dispatches at once, so a lone task on an idle master is decided and sent in the turn
        its journal commit resolved in, not a turn later; every further call in that turn
        joins one dispatch in the next turn, so a burst of submissions committed together
        still gets one dispatch per turn rather than one per task."""
        if self.scheduled:
            return
        loop = asyncio.get_running_loop()
        if self.pumped_this_turn:
            self.scheduled = True
            loop.call_soon(self._scheduled)
            return
        self.pumped_this_turn = True
        loop.call_soon(self._next_turn)
        if self.stopping():
            return
        try:
            self.pump()
        except Exception:  # as a scheduled dispatch's would: logged, not the submitter's error
            log.exception("dispatch failed")

    def _next_turn(self) -> None:
        self.pumped_this_turn = False

    def _scheduled(self) -> None:
        self.scheduled = False
        if not self.stopping():
            self.pump()

    def pump(self) -> None:
        """Dispatches whatever can be dispatched now."""
        self.apply(self.core.dispatch(self.clock.monotonic()))

    def tick(self) -> None:
        self.apply(self.core.tick(self.clock.monotonic()))
        self.pump()

    def apply(self, commands: list[Command]) -> None:
        sessions = self.registry.sessions
        for command in commands:
            if isinstance(command, Assign):
                self._send_assignment(command)
            elif isinstance(command, Persist):
                self._persist(command)
            elif isinstance(command, Finished):
                self.ends.finished(command.task)
            elif isinstance(command, Expired):
                log.warning(
                    "device %s declared dead; its tasks are queued again", command.device_id
                )
                session = sessions.pop(command.device_id, None)
                if session is not None:
                    session.close("declared dead")
            elif isinstance(command, CancelAttempt):
                session = sessions.get(command.device_id)
                if session is not None:
                    session.send_cancel(command.task_id, command.attempt, command.reason)
            # Reconciled and Forgotten report to the caller (the link, forget_gone): nothing to do

    def _send_assignment(self, command: Assign) -> None:
        row = self.rows[command.task.id]
        session = self.registry.sessions.get(command.device_id)
        if session is None:  # cannot happen: only devices with a live session are schedulable
            self.apply(
                self.core.failed(
                    row.id,
                    command.attempt,
                    command.device_id,
                    FailureKind.REJECTED,
                    "no session",
                    self.clock.monotonic(),
                )
            )
            return
        device = self.core.devices[command.device_id]
        row.device_type = device.device_type
        # the row shows the attempt now; the journal may learn of it only with the task's end
        update_row(row, command.task, self.clock)
        session.send_assignment(row, command.attempt)
        log.info("task %s assigned to %s attempt %d", row.id, command.device_id, command.attempt)

    def _persist(self, command: Persist) -> None:
        row = self.rows.get(command.task.id)
        if row is None:
            return
        self.journal.update(command.task.id, update_row(row, command.task, self.clock))
