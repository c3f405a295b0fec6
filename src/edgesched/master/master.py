"""The master's state machine shell: carries out the core's commands, feeds it what happens.

It owns the journal, the core, the agent sessions and the result hub; the gRPC servicers and
the HTTP routes are thin layers that call it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgesched.clock import Clock, SystemClock
from edgesched.config import Settings
from edgesched.core.commands import (
    Assign,
    CancelAttempt,
    Command,
    Expired,
    Finished,
    Forgotten,
    Persist,
    Reconciled,
    accepted,
    reconciliation,
)
from edgesched.core.core import Core
from edgesched.core.state import Device, Metrics, Task, TaskState
from edgesched.core.strategies import make_strategy
from edgesched.errors import (
    ConflictError,
    NotFoundError,
)
from edgesched.inference.labels import Detection
from edgesched.journal.base import Journal, TaskRow
from edgesched.kinds import FailureKind
from edgesched.master.admission import Admission
from edgesched.master.hub import ResultHub
from edgesched.master.metrics import MasterMetrics
from edgesched.master.payloads import PayloadCache, remove_quietly
from edgesched.master.registry import AgentRegistry
from edgesched.master.rows import task_from_row, update_row
from edgesched.master.session import AgentSession
from edgesched.master.storage import DiskGuard, remove_record
from edgesched.master.submission import Submission
from edgesched.master.token import TokenFile
from edgesched.wire import link as wire

log = logging.getLogger("edgesched.master")


class Master:
    """The asyncio shell around the core. Owns the core (``Core``), the journal handle, the
    unfinished tasks' rows, the admission of submissions (``Admission``), the in-memory
    payloads (``PayloadCache``), the agents (``AgentRegistry``), the result hub, the tokens and
    the metrics. Every change of a task goes through here: intake (``submit``), the core's
    commands (``apply``: assignments, cancels, journal writes, results to watchers), the
    agents' events, the operators' API. It speaks no wire protocol (the servicers and the HTTP
    gateway decode and encode) and opens no socket."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        guard: DiskGuard | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        strategy = make_strategy(settings.scheduling.strategy, settings.scheduling, self.rng)
        self.core = Core(settings.scheduling, strategy, self.rng)
        self.data_dir = Path(settings.master.data_dir)
        self.upload_dir = self.data_dir / "upload"
        m = settings.master
        self.guard = guard or DiskGuard(self.data_dir, m.min_free_mb, m.reserve_mb)
        self.join_token = TokenFile(self.data_dir, "join")
        self.api_token = TokenFile(self.data_dir, "api")
        self.token_created = self.join_token.created
        self.rows: dict[str, TaskRow] = {}  #: unfinished tasks, as journaled
        self.payloads = PayloadCache()  #: unfinished tasks' payloads kept in memory
        self._pump_scheduled = False
        self.registry = AgentRegistry(m, journal, self.clock, lambda: self.token)
        self.hub = ResultHub()
        self.finished_total: dict[str, int] = {}
        self.stopping = False
        self.started_at = self.clock.monotonic()
        #: called with the row of every seed task that ends done (the result pusher)
        self.on_seed_done: Callable[[TaskRow], None] | None = None
        self.admission = Admission(
            settings,
            journal,
            self.clock,
            self.guard,
            self.data_dir,
            self.upload_dir,
            admitted=self._queue,
            stopping=lambda: self.stopping,
        )
        self.metrics = MasterMetrics()
        self.metrics.attach(self)

    # ---- start -------------------------------------------------------------------------

    async def restore(self) -> int:
        """Takes back every unfinished task from the journal. Returns how many."""
        self.registry.credentials = await self.journal.agents()
        now = self.clock.monotonic()
        rows = await self.journal.unfinished()
        for row in rows:
            self.rows[row.id] = row
            self.inflight[row.client_id] += 1
            self.core.restore(task_from_row(row, now, self.clock), now)
        self.pump()
        return len(rows)

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

    def _queue(self, row: TaskRow, sub: Submission) -> None:
        """A task the admission journaled (not a duplicate) enters the core's queue."""
        self.rows[row.id] = row  # it keeps the in-flight place the admission took
        self.payloads.keep(row.id, sub.payload)  # sent from memory: no disk read per dispatch
        now = self.clock.monotonic()
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

    def pump_soon(self) -> None:
        """One dispatch for everything that arrived in this turn of the event loop (a burst of
        submissions committed together would otherwise start one dispatch per task)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        if not self.stopping:
            self.pump()

    # ---- commands ----------------------------------------------------------------------

    def pump(self) -> None:
        """Dispatches whatever can be dispatched now."""
        self.apply(self.core.dispatch(self.clock.monotonic()))

    def tick(self) -> None:
        self.apply(self.core.tick(self.clock.monotonic()))
        self.pump()

    def apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Assign):
                self._send_assignment(command)
            elif isinstance(command, Persist):
                self._persist(command.task)
            elif isinstance(command, Finished):
                self._finished(command.task)
            elif isinstance(command, Expired):
                log.warning(
                    "device %s declared dead; its tasks are queued again", command.device_id
                )
                session = self.sessions.pop(command.device_id, None)
                if session is not None:
                    session.close("declared dead")
            elif isinstance(command, CancelAttempt):
                session = self.sessions.get(command.device_id)
                if session is not None:
                    session.send_cancel(command.task_id, command.attempt, command.reason)
            # Reconciled and Forgotten report to the caller (the link, forget_gone): nothing to do

    def _send_assignment(self, command: Assign) -> None:
        row = self.rows[command.task.id]
        session = self.sessions.get(command.device_id)
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
        session.send_assignment(row, command.attempt)
        log.info("task %s assigned to %s attempt %d", row.id, command.device_id, command.attempt)

    def _persist(self, task: Task) -> None:
        row = self.rows.get(task.id)
        if row is None:
            return
        self.journal.update(task.id, update_row(row, task, self.clock))

    def _finished(self, task: Task) -> None:
        self.payloads.drop(task.id)
        row = self.rows.pop(task.id, None)
        if row is None:
            return
        self.admission.release(row.client_id)
        self.finished_total[row.state] = self.finished_total.get(row.state, 0) + 1
        self.metrics.finished.labels(row.state).inc()
        if task.state is TaskState.DONE:
            self.metrics.observe_done(row.timings)
        if task.state is TaskState.DONE:
            log.info("task %s done on %s", task.id, task.device_id)
        else:
            log.warning("task %s %s: %s", task.id, row.state, row.error)
        if row.origin == "seed" and task.state is TaskState.DONE:
            if self.on_seed_done is not None:
                self.on_seed_done(row)  # the upload goes once the result is delivered
        elif task.state is TaskState.DEAD:
            pass  # kept for an operator's retry, until retention prunes the task
        else:  # once the journal holds the end: before, a restart would need the payload
            self.remove_payload_after_commit(row)
        self.hub.publish(row)

    def remove_payload_after_commit(self, row: TaskRow) -> None:
        """The payload (unless ``keep_upload``) and its intake record go once everything
        journaled so far, this task's end included, is committed."""
        path = None if self.settings.master.keep_upload else Path(row.payload_path)
        data_dir, task_id = self.data_dir, row.id

        def remove() -> None:
            if path is not None:
                remove_quietly(path)
            remove_record(data_dir, task_id)

        self.journal.after_commit(remove)

    # ---- results from agents -----------------------------------------------------------

    def task_started(self, device_id: str, task_id: str, attempt: int) -> None:
        now = self.clock.monotonic()
        self.core.seen(device_id, now)
        self.apply(self.core.started(task_id, attempt, now, device_id))

    def task_done(
        self,
        device_id: str,
        task_id: str,
        attempt: int,
        label: str,
        detections: list[Detection],
        board: dict[str, float],
    ) -> bool:
        now = self.clock.monotonic()
        task = self.core.tasks.get(task_id)
        service_ms = board.get("total_ms", 0.0) - board.get("queue_ms", 0.0)
        service_ms -= board.get("receive_ms", 0.0)
        commands = self.core.done(task_id, attempt, device_id, service_ms, now)
        if not accepted(commands, task_id) or task is None:
            log.info("discarded result of task %s attempt %d from %s", task_id, attempt, device_id)
            self.pump()
            return False
        row = self.rows[task_id]
        turnaround_ms = (now - task.assigned_at) * 1000
        network_ms = max(0.0, turnaround_ms - board.get("total_ms", 0.0))
        row.label = label
        row.detections = detections
        row.timings = {
            "queue_wait_ms": round((task.assigned_at - task.queued_at) * 1000, 3),
            "transfer_ms": round(board.get("receive_ms", 0.0) + network_ms / 2, 3),
            "inference_ms": round(board.get("inference_ms", 0.0), 3),
            "result_return_ms": round(network_ms / 2, 3),
            "delivery_ms": 0.0,
            "board": board,
        }
        device = self.core.devices.get(device_id)
        if device is not None:
            row.device_type = device.device_type
        self.apply(commands)
        self.pump()
        return True

    def task_failed(self, device_id: str, task_id: str, attempt: int, kind: str, msg: str) -> None:
        commands = self.core.failed(task_id, attempt, device_id, kind, msg, self.clock.monotonic())
        if commands:
            log.warning(
                "task %s attempt %d failed on %s: %s: %s", task_id, attempt, device_id, kind, msg
            )
        else:  # a live attempt always yields a command: this one was superseded or cancelled
            log.info(
                "ignored report for task %s attempt %d from %s (superseded)",
                task_id,
                attempt,
                device_id,
            )
        self.apply(commands)
        self.pump()

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

    # ---- agents (the link servicer calls these) ----------------------------------------

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
        self.pump()
        return reconciliation(commands)

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

    # ---- journal writes for the seed's protocols (compat/) ------------------------------

    def record_delivery(self, task_id: str, values: dict[str, Any]) -> None:
        """A finished seed task's delivery state (the pusher's), written with the next commit."""
        self.journal.update(task_id, values)

    async def next_number(self, name: str, floor: int = 0) -> int:
        """The next value of a journaled counter, at least ``floor`` (seed upload names)."""
        return await self.journal.next_counter(name, floor)

    # ---- API ---------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The join token in force (re-read after a rotation)."""
        return self.join_token.current()

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
        self.apply(self.core.drain(device_id, on))  # kept when the agent rejoins
        device = self.core.devices[device_id]
        session = self.sessions.get(device_id)
        if session is not None:
            reason = "drained by an operator" if on else "undrained by an operator"
            session.send_control(wire.drain(on, reason))
        log.info("device %s %s", device_id, "draining" if on else "undrained")
        self.pump()
        return device

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
        if not await asyncio.to_thread(Path(row.payload_path).is_file):
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
        self.apply(self.core.retry(task, now))
        self.journal.update(task_id, {"finished_ms": 0, "delivery": row.delivery})
        self.pump()
        return row

    async def cancel(self, task_id: str, reason: str = "cancelled by request") -> TaskRow:
        row = await self.get_task(task_id)
        if task_id not in self.core.tasks:
            raise ConflictError(f"task {task_id} is already {row.state}")
        self.apply(self.core.cancel(task_id, self.clock.monotonic(), reason))
        self.pump()
        return await self.get_task(task_id)
