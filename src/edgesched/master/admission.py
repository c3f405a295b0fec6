"""Admission of submissions: the checks, the client's in-flight limit, and the one journal
transaction that stores the task's row with its payload-log entry (payload and intake record)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from edgesched import failpoints
from edgesched.clock import Clock
from edgesched.config import MasterSettings, Settings
from edgesched.core.strategies import canonical_strategy
from edgesched.errors import BadInputError, DiskFullError, LimitExceededError, TransportError
from edgesched.filenames import display_name
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.payloadlog import PayloadLog
from edgesched.master.storage import DiskGuard
from edgesched.master.submission import Submission, check_picture, check_size, check_task_type


class Admission:
    """Turns a submission into a journaled task. Owns the per-client counts of unfinished
    tasks (``inflight``: taken here, given back by the master when a task ends). It may not
    queue a task or touch the core: a stored task goes to ``admitted`` (the master)."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        clock: Clock,
        guard: DiskGuard,
        data_dir: Path,
        plog: PayloadLog,
        admitted: Callable[[TaskRow, Submission], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock
        self.guard = guard
        self.data_dir = data_dir
        self.plog = plog
        self._admitted = admitted
        self._stopping = stopping
        self.inflight: Counter[str] = Counter()  #: unfinished tasks per client

    def space_problem(self) -> str:
        """Why the master takes no new work now ("" when it does): the journal cannot write,
        or the disk has no room for the reserve and the uploads."""
        return self.journal.fault or self.guard.short

    def check_space(self, directory: Path, size: int) -> None:
        """DiskFullError unless the journal writes and an upload of ``size`` bytes leaves
        ``master.min_free_mb`` free on the disk of ``directory``."""
        if self.journal.fault:
            raise DiskFullError(
                f"{self.journal.fault}; no new tasks until it can write again "
                "(docs/operations.md, full disk)"
            )
        self.guard.check_upload(directory, size)

    async def submit(self, sub: Submission) -> tuple[TaskRow, bool]:
        """Journals a task (payload first), then hands it to be queued. Durable when it
        returns. (row, True) for a repeated idempotency key: the task journaled before."""
        if self._stopping():
            raise TransportError("master is shutting down")
        problem = self.space_problem()
        if problem:
            raise DiskFullError(problem)
        check_task_type(self.settings, sub.task_type)
        if not sub.idem_key:
            raise BadInputError("idempotency_key is required")
        m = self.settings.master
        # a repeated key is found by the journal's insert (one round trip, not two); only a
        # client at its limit is looked up first, so that its retries still get their answers
        if self.inflight[sub.client_id] >= m.max_inflight_per_client:
            existing = await self.journal.find_key(sub.client_id, sub.idem_key)
            if existing is not None:
                return existing, True
            raise LimitExceededError(
                f"client {sub.client_id!r} has {self.inflight[sub.client_id]} tasks in flight, "
                f"the limit is {m.max_inflight_per_client} (master.max_inflight_per_client); "
                "wait for results"
            )
        # the place is taken now, before anything awaits: submissions arriving together cannot
        # all pass the check above; _commit gives it back unless the task is admitted
        self.inflight[sub.client_id] += 1
        try:
            row = await self._prepare(sub, m)
        except BaseException:
            self.release(sub.client_id)
            raise
        # shielded: a client that goes away while the row commits must not leave a durable
        # task that nobody queued (or a queued task without its payload)
        return await asyncio.shield(self._commit(row, sub))

    def release(self, client_id: str) -> None:
        self.inflight[client_id] -= 1
        if self.inflight[client_id] <= 0:
            del self.inflight[client_id]

    async def _prepare(self, sub: Submission, m: MasterSettings) -> TaskRow:
        """Checks the payload and builds the task's row."""
        strategy = canonical_strategy(sub.strategy) if sub.strategy else ""
        if self.settings.tasktypes[sub.task_type].raw:
            check_size(sub.payload, m.max_upload_bytes)
        elif not sub.checked:
            await asyncio.to_thread(check_picture, sub.payload, m.max_upload_bytes, m.max_pixels)
        task_id = uuid.uuid4().hex
        # a native payload goes to the payload log, whose CRC is its integrity check (no
        # cryptographic hash on the hot path); a seed upload's file is hashed, as it stays a
        # file the seed's programs can touch
        sha256 = ""
        if not sub.payload_path:
            self.check_space(self.data_dir, len(sub.payload))
        else:
            sha256 = hashlib.sha256(sub.payload).hexdigest()
        now_ms = self.clock.wall_ms()
        return TaskRow(
            id=task_id,
            client_id=sub.client_id,
            idem_key=sub.idem_key,
            task_type=sub.task_type,
            filename=display_name(sub.filename),
            payload_path=sub.payload_path,  # a native task's: set when its entry is staged
            payload_size=len(sub.payload),
            payload_sha256=sha256,
            submitted_ms=now_ms,
            updated_ms=now_ms,
            metadata=dict(sub.metadata),
            origin=sub.origin,
            strategy=strategy,
            deadline_ms=sub.deadline_ms,
            client_addr=sub.client_addr,
            delivery="pending" if sub.origin == "seed" else "",
        )

    async def _commit(self, row: TaskRow, sub: Submission) -> tuple[TaskRow, bool]:
        data = None if sub.payload_path else sub.payload

        unstage = functools.partial(self.plog.unstage, row.id)

        def store() -> Callable[[], None]:  # in the journal's thread, just before the row
            # the transaction now open commits as sequence + 1: an entry whose commit never
            # happened (the master died first) is told apart from one whose row was lost
            self.plog.stage_task(row, data, self.journal.sequence + 1)
            return unstage  # the row was not inserted: its entry must not be written

        try:
            stored, duplicate = await self.journal.insert(row, store)
        except BaseException:
            self.release(sub.client_id)
            raise
        failpoints.hit("after_commit_before_ack")
        if duplicate:
            self.release(sub.client_id)
            return stored, True
        self._admitted(stored, sub)  # it keeps the in-flight place submit() took
        return stored, False
