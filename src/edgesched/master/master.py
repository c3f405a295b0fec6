"""The master: the coordinator of its parts, and the one object the servicers and routes call.

It wires the core, the journal, the admission, the agents' registry, the pump, the result
handling and the operations together, and feeds the core what agents do (joins, beats,
leaves); the parts do the work (see ``Master``).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgesched.clock import Clock, SystemClock
from edgesched.config import Settings
from edgesched.core.commands import Command, Forgotten, Reconciled, reconciliation
from edgesched.core.core import Core
from edgesched.core.state import Device, Metrics, Task
from edgesched.core.strategies import make_strategy
from edgesched.inference.labels import Detection
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.admission import Admission
from edgesched.master.ends import TaskEnds
from edgesched.master.hub import ResultHub
from edgesched.master.metrics import MasterMetrics
from edgesched.master.operations import Operations
from edgesched.master.payloadlog import PayloadLog
from edgesched.master.payloads import PayloadCache
from edgesched.master.payloadstore import PayloadStore
from edgesched.master.pump import Pump
from edgesched.master.registry import AgentRegistry
from edgesched.master.restore import restore
from edgesched.master.results import Report, Results
from edgesched.master.rows import update_row
from edgesched.master.session import AgentSession
from edgesched.master.storage import DiskGuard
from edgesched.master.submission import Submission
from edgesched.master.token import TokenFile
from edgesched.wire import link as wire

log = logging.getLogger("edgesched.master")


class Master:
    """The asyncio shell around the core, and the coordinator of the master's parts. It owns
    the core (``Core``), the journal handle, the unfinished tasks' rows (shared, by
    reference, with its parts), the tokens, and builds its parts with explicit collaborators:
    the admission of submissions (``Admission``), the in-memory payloads (``PayloadCache``),
    the agents (``AgentRegistry``), the carrying out of the core's commands (``Pump``), a
    task's end (``TaskEnds``: watchers, result hub, metrics), the agents' attempt reports
    (``Results``), the operators' actions (``Operations``) and restart recovery
    (``restore``). It feeds the core the agents' joins, beats and departures itself. It
    speaks no wire protocol (the servicers and the HTTP gateway decode and encode), opens no
    socket, and does not do its parts' work: its other methods delegate."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        guard: DiskGuard | None = None,
        plog: PayloadStore | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        strategy = make_strategy(settings.scheduling.strategy, settings.scheduling, self.rng)
        self.core = Core(settings.scheduling, strategy, self.rng)
        self.core.set_unhedged(name for name, tt in settings.tasktypes.items() if not tt.hedge)
        self.data_dir = Path(settings.master.data_dir)
        m = settings.master
        self.guard = guard or DiskGuard(
            self.data_dir, m.min_free_mb, m.reserve_mb, self.clock.monotonic
        )
        self.join_token = TokenFile(self.data_dir, "join")
        self.api_token = TokenFile(self.data_dir, "api")
        self.token_created = self.join_token.created
        self.rows: dict[str, TaskRow] = {}  #: unfinished tasks, as journaled
        self.payloads = PayloadCache()  #: unfinished tasks' payloads kept in memory
        #: every payload and intake record, written with the journal's commits
        self.plog: PayloadStore = plog or PayloadLog(
            self.data_dir, m.payload_segment_mb, m.durability == "full"
        )
        journal.add_hook(self.plog)
        self.registry = AgentRegistry(m, journal, self.clock, lambda: self.token)
        self.hub = ResultHub()
        self.stopping = False
        self.started_at = self.clock.monotonic()
        self.admission = Admission(
            settings,
            journal,
            self.clock,
            self.guard,
            self.data_dir,
            self.plog,
            admitted=self._queue,
            stopping=lambda: self.stopping,
        )
        self.metrics = MasterMetrics()
        self.ends = TaskEnds(
            settings,
            journal,
            self.rows,
            self.payloads,
            self.admission,
            self.hub,
            self.metrics,
            self.data_dir,
            self.plog,
        )
        self.pumper = Pump(
            self.core,
            journal,
            self.registry,
            self.rows,
            self.ends,
            self.clock,
            stopping=lambda: self.stopping,
        )
        self.results = Results(self.core, self.rows, self.pumper, self.clock)
        self.operations = Operations(
            settings,
            self.core,
            journal,
            self.registry,
            self.rows,
            self.admission.inflight,
            self.pumper,
            self.clock,
            self.plog.apresent,
        )
        self.metrics.attach(self)

    # ---- start -------------------------------------------------------------------------

    async def restore(self) -> int:
        """Takes back every unfinished task from the journal. Returns how many."""
        count = await restore(
            self.journal, self.core, self.registry, self.rows, self.inflight, self.clock
        )
        self.pump()
        return count

    # ---- intake ------------------------------------------------------------------------

    @property
    def inflight(self) -> Counter[str]:
        """Unfinished tasks per client (the admission's)."""
        return self.admission.inflight

    def space_problem(self) -> str:
        return self.admission.space_problem()

    def check_space(self, directory: Path, size: int) -> None:
        self.admission.check_space(directory, size)

    async def submit(self, sub: Submission) -> tuple[TaskRow, bool]:
        """Journals a task (payload first), then queues it. Durable when it returns."""
        return await self.admission.submit(sub)

    async def submit_many(self, subs: list[Submission]) -> list[tuple[TaskRow, bool] | Exception]:
        """Journals a batch of tasks in one journal operation, then queues them together;
        one outcome per submission, in order (``Admission.submit_many``)."""
        return await self.admission.submit_many(subs)

    def _queue(self, admitted: list[tuple[TaskRow, Submission]]) -> None:
        """Tasks the admission journaled (not duplicates) enter the core's queue; one
        dispatch takes them all."""
        now = self.clock.monotonic()
        for row, sub in admitted:
            self.rows[row.id] = row  # it keeps the in-flight place the admission took
            self.payloads.keep(row.id, sub.payload)  # sent from memory: no disk read per dispatch
            self.core.submit(
                Task(
                    id=row.id,
                    task_type=sub.task_type,
                    size_bytes=len(sub.payload),
                    submitted_at=now,
                    client_id=sub.client_id,
                    strategy=row.strategy,
                    deadline_s=sub.deadline_ms / 1000,
                ),
                now,
            )
            log.info("task %s submitted type=%s size=%d", row.id, sub.task_type, len(sub.payload))
        self.pump_soon()

    def cached_payload(self, task_id: str) -> bytes | None:
        """The payload of a task submitted to this process and not ended yet, if kept."""
        return self.payloads.get(task_id)

    async def read_payload(self, row: TaskRow) -> bytes:
        """A payload not kept in memory, from its file, the payload log or the database (never
        blocking the loop). ``PayloadError`` when it cannot be read back as submitted."""
        return await self.plog.aread(row)

    # ---- commands (the pump's) ---------------------------------------------------------

    def pump_soon(self) -> None:
        """A task was queued: dispatch now if this turn has not yet, else with the rest of
        the turn's tasks in the next one."""
        self.pumper.soon()

    def pump(self) -> None:
        """Dispatches whatever can be dispatched now."""
        self.pumper.pump()

    def tick(self) -> None:
        self.pumper.tick()

    def apply(self, commands: list[Command]) -> None:
        self.pumper.apply(commands)

    # ---- task ends (the ends') ---------------------------------------------------------

    @property
    def finished_total(self) -> dict[str, int]:
        """Tasks ended since this master started, per final state."""
        return self.ends.finished_total

    @property
    def on_seed_done(self) -> Callable[[TaskRow], None] | None:
        """Called with the row of every seed task that ends done (the result pusher)."""
        return self.ends.on_seed_done

    @on_seed_done.setter
    def on_seed_done(self, callback: Callable[[TaskRow], None] | None) -> None:
        self.ends.on_seed_done = callback

    def remove_payload_after_commit(self, row: TaskRow) -> None:
        """The payload's log entry and file (unless ``keep_upload``) go once committed."""
        self.ends.remove_payload_after_commit(row)

    # ---- results from agents (the results') --------------------------------------------

    def task_started(self, device_id: str, task_id: str, attempt: int) -> None:
        self.results.started(device_id, task_id, attempt)

    def task_done(
        self,
        device_id: str,
        task_id: str,
        attempt: int,
        label: str,
        detections: list[Detection],
        board: dict[str, float],
    ) -> bool:
        return self.results.done(device_id, task_id, attempt, label, detections, board)

    def task_failed(self, device_id: str, task_id: str, attempt: int, kind: str, msg: str) -> None:
        self.results.failed(device_id, task_id, attempt, kind, msg)

    def task_reports(self, device_id: str, reports: list[Report]) -> None:
        """An agent's reports in order (a protocol 1.2 batch), then one dispatch."""
        self.results.reports(device_id, reports)

    # ---- agents (the link servicer calls these) ----------------------------------------

    async def forget_gone(self) -> list[str]:
        """Devices dead or gone for ``master.forget_dead_after_s`` leave the registry, the API,
        the metrics and the journal's agents (they come back with the join token, as new).
        Agents journaled but never seen since this master started are forgotten as long after
        its start."""
        after = self.settings.master.forget_dead_after_s
        if after <= 0:
            return []
        now = self.clock.monotonic()
        gone = [c.device_id for c in self.core.forget(now, after) if isinstance(c, Forgotten)]
        if now - self.started_at >= after:
            gone += [
                agent_id
                for agent_id in self.agent_credentials
                if agent_id not in self.core.devices and agent_id not in gone
            ]
        if not gone:
            return []
        self.registry.forget(gone)
        await self.journal.remove_agents(gone)
        log.info(
            "forgot %d devices gone for over %g s (master.forget_dead_after_s): %s",
            len(gone),
            after,
            ", ".join(sorted(gone)[:10]) + (" ..." if len(gone) > 10 else ""),
        )
        return gone

    @property
    def sessions(self) -> dict[str, AgentSession]:
        """The live session of each connected agent (the registry's)."""
        return self.registry.sessions

    @property
    def agent_credentials(self) -> dict[str, str]:
        """Agent id → sha256 of its credential (the registry's)."""
        return self.registry.credentials

    def agent_joined(
        self, device: Device, session: AgentSession, running: list[str], finished: list[str]
    ) -> Reconciled:
        """An authenticated agent's device joins (or rejoins) with its new session; returns
        what it keeps and drops of what it runs."""
        self.registry.attach(session)
        commands = self.core.register(device, running, finished, self.clock.monotonic())
        log.info(
            "agent %s joined from %s: type=%s slots=%d task types=%s",
            device.id,
            session.peer,
            device.device_type,
            device.slots,
            ",".join(sorted(device.task_types)),
        )
        self.apply(commands)
        if device.operator_drained:  # drained while the agent was away: it reports it too
            session.send_control(wire.drain(True, "drained by an operator"))
        reconciled = reconciliation(commands)
        for task_id in reconciled.keep:  # a task restored queued may have been adopted
            task, row = self.core.tasks.get(task_id), self.rows.get(task_id)
            if task is not None and row is not None and row.state != task.state.value:
                update_row(row, task, self.clock)
        self.pump()
        return reconciled

    def agent_seen(self, device_id: str) -> None:
        """Any frame from the agent is a sign of life."""
        self.apply(self.core.seen(device_id, self.clock.monotonic()))

    def agent_heartbeat(self, device_id: str, metrics: Metrics, draining: bool) -> None:
        now = self.clock.monotonic()
        device = self.core.devices.get(device_id)
        revived = device is None or not device.schedulable
        self.apply(self.core.heartbeat(device_id, metrics, now))
        changed = device is not None and device.self_draining != draining
        self.apply(self.core.self_drain(device_id, draining))
        if changed:
            log.info("agent %s %s", device_id, "drains" if draining else "no longer drains")
            revived = revived or not draining
        if revived:  # a beat opens no slot: only a device coming back adds capacity
            self.pump()  # (dispatch sorts every device: per beat it was most CPU)

    def agent_left(self, device_id: str) -> None:
        """The agent said goodbye: its attempts run elsewhere."""
        self.apply(self.core.leave(device_id, self.clock.monotonic()))
        self.pump()

    def agent_gone(self, session: AgentSession) -> None:
        """An agent's stream ended; unless a newer session replaced it, its link is lost."""
        if self.registry.detach(session):
            self.apply(self.core.link_lost(session.device_id, self.clock.monotonic()))
            log.warning("agent %s link lost (%s)", session.device_id, session.close_reason)
            self.pump()  # its attempts' hedges go out now, not at the next tick

    # ---- journal writes for the seed's protocols (compat/) ------------------------------

    def record_delivery(self, task_id: str, values: dict[str, Any]) -> None:
        """A finished seed task's delivery state (the pusher's), written with the next commit."""
        self.journal.update(task_id, values)

    async def next_number(self, name: str, floor: int = 0) -> int:
        """The next value of a journaled counter, at least ``floor`` (seed upload names)."""
        return await self.journal.next_counter(name, floor)

    # ---- API -------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The join token in force (re-read after a rotation)."""
        return self.join_token.current()

    def waiting_note(self, row: TaskRow) -> str:
        """Why a queued task is not running, when the reason is that no device can run it."""
        return self.operations.waiting_note(row)

    def drain(self, device_id: str, on: bool) -> Device:
        """Drain (or undrain) a device (the operations')."""
        return self.operations.drain(device_id, on)

    async def get_task(self, task_id: str) -> TaskRow:
        return await self.operations.get_task(task_id)

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]:
        """Tasks newest first, as they are now (the operations')."""
        return await self.operations.list_tasks(state, limit, offset)

    async def task_counts(self) -> dict[str, int]:
        """Tasks per state, as they are now (the operations')."""
        return await self.operations.counts()

    async def retry(self, task_id: str) -> TaskRow:
        """Queues a dead task again, with its failure count reset (the operations')."""
        return await self.operations.retry(task_id)

    async def cancel(self, task_id: str, reason: str = "cancelled by request") -> TaskRow:
        return await self.operations.cancel(task_id, reason)
