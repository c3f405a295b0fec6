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
from edgesched.errors import (
    BadInputError,
    DiskFullError,
    EdgeschedError,
    JournalError,
    JournalUnavailableError,
    LimitExceededError,
    TransportError,
)
from edgesched.filenames import display_name
from edgesched.journal.base import UNAVAILABLE, Journal, TaskRow
from edgesched.master.payloadstore import PayloadStore
from edgesched.master.storage import DiskGuard
from edgesched.master.submission import Submission, check_picture, check_size, check_task_type


class Admission:
    """Turns a submission into a journaled task. Owns the per-client counts of unfinished
    tasks (``inflight``: taken here, given back by the master when a task ends). It may not
    queue a task or touch the core: stored tasks go to ``admitted`` (the master), a batch's
    together so that one dispatch takes them."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        clock: Clock,
        guard: DiskGuard,
        data_dir: Path,
        plog: PayloadStore,
        admitted: Callable[[list[tuple[TaskRow, Submission]]], None],
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
            raise self._refusal(self.journal.fault)
        self.guard.check_upload(directory, size)

    @staticmethod
    def _refusal(fault: str) -> JournalError:
        """New work refused while the journal cannot write: its database away (UNAVAILABLE:
        try again, another master or the database will be back), or a full disk."""
        if fault.startswith(UNAVAILABLE):
            return JournalUnavailableError(f"{fault}; no new tasks until it returns")
        return DiskFullError(
            f"{fault}; no new tasks until it can write again (docs/operations.md, full disk)"
        )

    async def submit(self, sub: Submission) -> tuple[TaskRow, bool]:
        """Journals a task (payload first), then hands it to be queued. Durable when it
        returns. (row, True) for a repeated idempotency key: the task journaled before."""
        self._check(sub)
        m = self.settings.master
        # a repeated key is found by the journal's insert (one round trip, not two); only a
        # client at its limit is looked up first, so that its retries still get their answers
        if self.inflight[sub.client_id] >= m.max_inflight_per_client:
            outcome = await self._over_limit(sub, self.inflight[sub.client_id], m)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
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

    async def submit_many(self, subs: list[Submission]) -> list[tuple[TaskRow, bool] | Exception]:
        """``submit`` for a batch, with every rule of ``submit`` per submission, in one journal
        operation: the in-flight places are taken for the whole batch before anything awaits,
        the pictures are checked in one thread hop, the rows are journaled by one
        ``insert_many`` and the stored tasks are handed over together. One outcome per
        submission, in order: (row, duplicate) or the error that refused it (a journal that
        cannot commit refuses every item). A key repeated within the batch is one task: the
        later items answer the first one's (duplicate)."""
        m = self.settings.master
        outcomes: list[tuple[TaskRow, bool] | Exception | None] = [None] * len(subs)
        first: dict[tuple[str, str], int] = {}  #: a key's first item in the batch
        repeats: list[tuple[int, int]] = []  #: (item, the first item with its key)
        placed: list[int] = []  #: items holding an in-flight place
        at_limit: list[tuple[int, int]] = []  #: (item, the client's count when refused)
        for i, sub in enumerate(subs):
            try:
                self._check(sub)
            except EdgeschedError as exc:
                outcomes[i] = exc
                continue
            key = (sub.client_id, sub.idem_key)
            if key in first:
                repeats.append((i, first[key]))
                continue
            first[key] = i
            if self.inflight[sub.client_id] >= m.max_inflight_per_client:
                at_limit.append((i, self.inflight[sub.client_id]))
                continue
            # the place is taken now, before anything awaits, as submit() takes it
            self.inflight[sub.client_id] += 1
            placed.append(i)
        prepared: list[tuple[int, TaskRow, Submission]] = []
        try:
            pictures = await self._check_pictures([subs[i] for i in placed], m)
            for i, problem in zip(placed, pictures, strict=True):
                sub = subs[i]
                try:
                    if problem is not None:
                        raise problem
                    row = await self._prepare(sub, m)
                except EdgeschedError as exc:
                    self.release(sub.client_id)
                    outcomes[i] = exc
                    continue
                prepared.append((i, row, sub))
        except BaseException:
            for i in placed:
                if outcomes[i] is None:
                    self.release(subs[i].client_id)
            raise
        if prepared:
            items = [(row, sub) for _, row, sub in prepared]
            try:
                # shielded as in submit(): the batch's tasks are queued once journaled
                results = await asyncio.shield(self._commit_many(items))
            except EdgeschedError as exc:  # the journal could not commit: nothing stored
                results = [exc] * len(prepared)
            for (i, *_), result in zip(prepared, results, strict=True):
                outcomes[i] = result
        for i, count in at_limit:
            outcomes[i] = await self._over_limit(subs[i], count, m)
        for i, j in repeats:
            earlier = outcomes[j]
            if isinstance(earlier, tuple):
                outcomes[i] = (earlier[0], True)
            else:  # the first was refused: this one is tried on its own, as if it came next
                try:
                    outcomes[i] = await self.submit(subs[i])
                except Exception as exc:  # its own, as any item's (a payload write's OSError)
                    outcomes[i] = exc
        return [o if o is not None else TransportError("not admitted") for o in outcomes]

    def _check(self, sub: Submission) -> None:
        """What refuses a submission before it takes a place: a stopping master, no space,
        an unknown task type, no idempotency key."""
        if self._stopping():
            raise TransportError("master is shutting down")
        problem = self.space_problem()
        if problem:
            raise self._refusal(problem) if self.journal.fault else DiskFullError(problem)
        check_task_type(self.settings, sub.task_type)
        if not sub.idem_key:
            raise BadInputError("idempotency_key is required")

    async def _over_limit(
        self, sub: Submission, count: int, m: MasterSettings
    ) -> tuple[TaskRow, bool] | Exception:
        """A submission of a client at its limit: its key's first task, else refused."""
        try:
            existing = await self.journal.find_key(sub.client_id, sub.idem_key)
        except EdgeschedError as exc:
            return exc
        if existing is not None:
            return existing, True
        return LimitExceededError(
            f"client {sub.client_id!r} has {count} tasks in flight, "
            f"the limit is {m.max_inflight_per_client} (master.max_inflight_per_client); "
            "wait for results"
        )

    async def _check_pictures(
        self, subs: list[Submission], m: MasterSettings
    ) -> list[EdgeschedError | None]:
        """check_picture for every picture of a batch not yet checked, in one thread hop;
        those that pass are marked checked (``_prepare`` does not check them again)."""
        todo = [s for s in subs if not s.checked and not self.settings.tasktypes[s.task_type].raw]
        problems: dict[int, EdgeschedError] = {}
        if todo:

            def check_all() -> None:
                for sub in todo:
                    try:
                        check_picture(sub.payload, m.max_upload_bytes, m.max_pixels)
                    except EdgeschedError as exc:
                        problems[id(sub)] = exc
                    else:
                        sub.checked = True

            await asyncio.to_thread(check_all)
        return [problems.get(id(s)) for s in subs]

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
        try:
            stored, duplicate = await self.journal.insert(row, self._store(row, sub))
        except BaseException:
            self.release(sub.client_id)
            raise
        failpoints.hit("after_commit_before_ack")
        if duplicate:
            self.release(sub.client_id)
            return stored, True
        self._admitted([(stored, sub)])  # it keeps the in-flight place submit() took
        return stored, False

    async def _commit_many(
        self, items: list[tuple[TaskRow, Submission]]
    ) -> list[tuple[TaskRow, bool] | Exception]:
        """``_commit`` for a batch: one journal operation, one hand-over of what it stored."""
        try:
            results = await self.journal.insert_many(
                [(row, self._store(row, sub)) for row, sub in items]
            )
        except BaseException:
            for _, sub in items:
                self.release(sub.client_id)
            raise
        for _ in items:  # a point per task: ``name:N`` still counts tasks
            failpoints.hit("after_commit_before_ack")
        admitted: list[tuple[TaskRow, Submission]] = []
        out: list[tuple[TaskRow, bool] | Exception] = []
        for (_, sub), result in zip(items, results, strict=True):
            if isinstance(result, Exception) or result[1]:
                self.release(sub.client_id)
            else:
                admitted.append((result[0], sub))  # it keeps its in-flight place
            out.append(result)
        if admitted:
            self._admitted(admitted)
        return out

    def _store(self, row: TaskRow, sub: Submission) -> Callable[[], Callable[[], None]]:
        """What runs in the journal's thread just before ``row``'s INSERT: its payload log
        entry staged (the payload's bytes, or none for a seed upload whose file holds them);
        it returns the undo for a row that is not inserted."""
        # a seed upload's file holds its bytes; the database store keeps them too (any master
        # can then dispatch it)
        data = sub.payload if not sub.payload_path or self.plog.stores_uploads else None
        unstage = functools.partial(self.plog.unstage, row.id)

        def store() -> Callable[[], None]:
            # the transaction now open commits as sequence + 1: an entry whose commit never
            # happened (the master died first) is told apart from one whose row was lost
            self.plog.stage_task(row, data, self.journal.sequence + 1)
            return unstage  # the row was not inserted: its entry must not be written

        return store
