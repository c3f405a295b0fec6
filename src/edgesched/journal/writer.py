"""The journal's writer thread: group commit, and commits held and retried on a full disk.

Every operation is an item on one queue. The thread takes whatever has queued, runs it in one
transaction and commits once (never waiting on a timer), then resolves the callers' futures on
their event loops. A commit the disk has no room for keeps its updates, flushes and
after-commit actions, in order, and tries them again every ``RETRY_S``; the writes' callers get
the error. Each write transaction advances the commit sequence, and the side record follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched import failpoints
from edgesched.errors import DiskFullError, JournalError
from edgesched.journal.base import CommitHook
from edgesched.journal.integrity import COMMITS, commit_record_path

log = logging.getLogger("edgesched.journal.sqlite")

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()

#: how often the writer tries again a batch the disk had no room for
RETRY_S = 1.0


@dataclass(slots=True)
class _Item:
    """One queued operation. ``kind``: read | write (a caller waits) | update (nobody waits,
    never dropped) | flush | after (``then`` runs once everything queued before it committed)."""

    op: Op
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None
    kind: str
    then: Callable[[], None] | None = None


def noop(conn: sqlite3.Connection) -> None:
    return None


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class Writer:
    """The writer thread of one SQLite journal. Owns the queue, the thread, the connection
    once opened (``open``), the side record's file descriptor, the commit counts and the
    fault. It may not decide what an operation does (the journal builds them) nor open or
    check the database (the journal does, before ``open``)."""

    def __init__(
        self, path: Path, durability: str, on_full: Callable[[], bool] | None = None
    ) -> None:
        self.path = path
        self.durability = durability
        #: called in the writer's thread when a commit meets a full disk; True if it freed
        #: space (the reserve), and the commit is tried again at once
        self.on_full = on_full
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.conn: sqlite3.Connection | None = None
        self.record_fd = -1
        self.commits = 0  #: transactions committed (group commits)
        self.ops = 0  #: operations committed
        self.sequence = 0  #: write transactions committed over the journal's life
        #: why the journal cannot write now ("" when it can); set by a failed commit, cleared by
        #: the next one that succeeds (what failed is kept and tried again)
        self.fault = ""
        self.held = 0  #: operations waiting for a commit that failed to be retried
        #: written right before every commit (the payload log), told whether it happened
        self.hooks: list[CommitHook] = []

    def open(self, conn: sqlite3.Connection) -> None:
        """Takes the opened, checked connection; opens the side record and brings it up to
        date (in the caller's thread, before ``start``)."""
        self.conn = conn
        self.record_fd = os.open(commit_record_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self.record_fd, 0o600)
        self.write_record()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self.thread.start()

    async def stop(self) -> None:
        if self.thread is None:
            return
        # everything queued before the stop is committed first (or, on a full disk, tried once
        # more and reported): no flush to wait on, which a full disk could hold forever
        self.queue.put(_STOP)
        await asyncio.to_thread(self.thread.join)
        self.thread = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.record_fd >= 0:
            os.close(self.record_fd)
            self.record_fd = -1

    def submit(self, op: Op, kind: str) -> asyncio.Future[Any]:
        """Queues an operation a caller waits for (read | write | flush)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.put(_Item(op, future, loop, kind))
        return future

    def update(self, op: Op) -> None:
        """Queues a write nobody waits for, never dropped."""
        self.queue.put(_Item(op, None, None, "update"))

    def after(self, action: Callable[[], None]) -> None:
        """``action`` runs once everything queued before it is committed."""
        self.queue.put(_Item(noop, None, None, "after", action))

    def write_record(self) -> None:
        """The side file: the sequence, overwritten in place (no new blocks on a full disk)."""
        try:
            os.pwrite(self.record_fd, f"{self.sequence:020d}\n".encode("ascii"), 0)
            if self.durability == "full":
                os.fdatasync(self.record_fd)
        except OSError as exc:
            log.error("journal: cannot update %s: %s", commit_record_path(self.path), exc)

    def _run(self) -> None:
        conn = self.conn
        assert conn is not None
        held: list[_Item] = []
        stop = False
        while True:
            batch: list[Any] = []
            if not stop:
                # with work held back by a full disk, try again every RETRY_S
                with contextlib.suppress(queue.Empty):
                    batch.append(self.queue.get(timeout=RETRY_S if held else None))
                while len(batch) < 2000:
                    try:
                        batch.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            items: list[_Item] = held + batch
            held = self._commit(conn, items) if items else []
            self.held = len(held)
            if stop and (not held or not batch):
                break
        if held:
            updates = sum(1 for item in held if item.kind == "update")
            log.error(
                "journal: stopping with %d updates not written (%s); their tasks resume from "
                "their last journaled state and no payload of theirs was deleted",
                updates,
                self.fault,
            )
            error = DiskFullError(self.fault or "journal stopped")
            for item in held:
                if item.future is not None and item.loop is not None:
                    item.loop.call_soon_threadsafe(_resolve, item.future, error, True)

    def _commit(
        self, conn: sqlite3.Connection, batch: list[_Item], again: bool = False
    ) -> list[_Item]:
        """Runs ``batch`` in one transaction; returns what must be tried again (a full disk)."""
        results: list[tuple[Any, bool]] = []
        writes = any(item.kind in ("write", "update") for item in batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # the common case: every operation succeeds, no savepoint needed
                results = [(item.op(conn), False) for item in batch]
            except (
                Exception
            ) as exc:  # one bad operation must not sink the batch: redo it one by one
                if is_disk_full(exc):
                    raise
                conn.execute("ROLLBACK")
                self._discard()  # the redo stages its entries again
                conn.execute("BEGIN IMMEDIATE")
                results = [self._isolated(conn, item.op) for item in batch]
            if writes:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + 1",
                    (COMMITS, self.sequence + 1),
                )
            for hook in self.hooks:  # the payload log: one write for the batch, then COMMIT
                hook.before_commit()
            if writes:  # a crash here leaves log entries whose transaction never committed
                failpoints.hit("before_commit")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._discard()  # nothing acknowledged may depend on an entry not committed
            full = is_disk_full(exc)
            if full and not again and self.on_full is not None and self.on_full():
                log.warning("journal: the disk is full; released the reserve to go on")
                return self._commit(conn, batch, again=True)
            return self._failed(conn, batch, exc, full)
        for hook in self.hooks:
            hook.committed()
        if writes:
            self.sequence += 1
            self.write_record()
        if self.fault:
            log.warning("journal: writing again (%d operations were held)", len(batch))
            self.fault = ""
        self.commits += 1
        self.ops += len(batch)
        for item, (value, failed) in zip(batch, results, strict=True):
            if item.then is not None:
                try:
                    item.then()
                except Exception:
                    log.exception("journal: after-commit action failed")
            if item.future is None or item.loop is None:
                if failed:
                    log.error("journal update failed: %s", value)
                continue
            item.loop.call_soon_threadsafe(_resolve, item.future, value, failed)
        return []

    def _failed(
        self, conn: sqlite3.Connection, batch: list[_Item], exc: Exception, full: bool
    ) -> list[_Item]:
        """A commit failed: callers of writes get the error; updates, flushes and after-commit
        actions are kept, in order, and tried again (a lost update could let a payload be
        deleted whose task the journal still holds as unfinished); reads run on their own."""
        wrapped: Exception = (
            DiskFullError(f"journal: no space left on device ({exc})")
            if full
            else JournalError(f"journal commit failed: {exc}")
        )
        if not self.fault:
            log.error("journal commit of %d operations failed: %s", len(batch), exc)
        self.fault = str(wrapped)
        keep: list[_Item] = []
        reads: list[_Item] = []
        for item in batch:
            if item.kind in ("update", "flush", "after"):
                keep.append(item)
            elif item.kind == "read":
                reads.append(item)
            elif item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_resolve, item.future, wrapped, True)
        if not keep:  # nothing held: a write of nothing finds out when space has returned
            keep.append(_Item(noop, None, None, "update"))
        for item in reads:
            try:
                value: Any = item.op(conn)
                failed = False
            except Exception as read_error:
                value, failed = read_error, True
            assert item.future is not None and item.loop is not None
            item.loop.call_soon_threadsafe(_resolve, item.future, value, failed)
        return keep

    def _discard(self) -> None:
        for hook in self.hooks:
            try:
                hook.discard()
            except Exception:
                log.exception("journal: a commit hook failed to discard its batch")

    @staticmethod
    def _isolated(conn: sqlite3.Connection, op: Op) -> tuple[Any, bool]:
        """One operation inside its own savepoint: its failure undoes it alone."""
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            if is_disk_full(exc):  # not this operation's fault: the whole batch waits
                raise
            return exc, True
        conn.execute("RELEASE op")
        return value, False


def _resolve(future: asyncio.Future[Any], value: Any, failed: bool) -> None:
    if future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)
