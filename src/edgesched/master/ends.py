"""A task's end: its watchers told, its metrics counted, its payload released or pushed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edgesched.config import Settings
from edgesched.core.state import Task, TaskState
from edgesched.errors import PayloadError
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.admission import Admission
from edgesched.master.hub import ResultHub
from edgesched.master.metrics import MasterMetrics
from edgesched.master.payloadformat import parse_ref
from edgesched.master.payloads import PayloadCache, remove_quietly, write_payload
from edgesched.master.payloadstore import PayloadStore, is_db_ref
from edgesched.master.storage import records, remove_record

log = logging.getLogger("edgesched.master")


class TaskEnds:
    """Carries out the core's ``Finished``: takes the task's row out of the unfinished ones,
    frees its client's in-flight place, counts it, publishes it to the result hub's watchers,
    hands a seed task's result to the pusher (``on_seed_done``) and releases a payload no
    longer needed once the journal holds the end (a dead task's is copied out of the payload
    log first, for an operator's retry). Owns the finished counts. It may not change
    the core, write a task's state to the journal (the core's ``Persist`` does) nor talk to an
    agent."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        rows: dict[str, TaskRow],
        payloads: PayloadCache,
        admission: Admission,
        hub: ResultHub,
        metrics: MasterMetrics,
        data_dir: Path,
        plog: PayloadStore,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.rows = rows
        self.payloads = payloads
        self.admission = admission
        self.hub = hub
        self.metrics = metrics
        self.data_dir = data_dir
        self.plog = plog
        #: intake records an older master wrote are still there: remove each with its task
        self.legacy_records = bool(records(data_dir))
        self.finished_total: dict[str, int] = {}
        #: called with the row of every seed task that ends done (the result pusher)
        self.on_seed_done: Callable[[TaskRow], None] | None = None

    def finished(self, task: Task) -> None:
        cached = self.payloads.get(task.id)
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
            self.release_after_commit(row.id)  # its log entry; its file is the pusher's
            if self.on_seed_done is not None:
                self.on_seed_done(row)  # the upload goes once the result is delivered
        elif task.state is TaskState.DEAD:
            self.keep_dead(row, cached)  # kept for an operator's retry, until retention
        else:  # once the journal holds the end: before, a restart would need the payload
            self.remove_payload_after_commit(row)
        self.hub.publish(row)

    def keep_dead(self, row: TaskRow, cached: bytes | None) -> None:
        """A dead task's payload leaves the log for its own file (``<data_dir>/dead/<id>``),
        journaled with its end, so that it does not keep every later segment alive until
        retention prunes the task. Done here, in the loop's thread: a task dies rarely."""
        if is_db_ref(row.payload_path):  # any master reads it there; retention deletes it
            return
        if parse_ref(row.payload_path) is None:  # a seed upload, or a retried dead task
            self.release_after_commit(row.id)
            return
        path = self.data_dir / "dead" / row.id
        try:
            data = cached if cached is not None else self.plog.read(row.payload_path)
            write_payload(path, data, self.settings.master.durability == "full")
        except (PayloadError, OSError) as exc:  # it stays in the log, which keeps it live
            log.error("task %s: its payload stays in the payload log: %s", row.id, exc)
            return
        row.payload_path = str(path)
        self.journal.update(row.id, {"payload_path": row.payload_path})
        self.release_after_commit(row.id)

    def release_after_commit(self, task_id: str) -> None:
        """The task's log entry is released once everything journaled so far is committed."""
        plog = self.plog

        def release() -> None:
            plog.release([task_id])

        self.journal.after_commit(release)

    def remove_payload_after_commit(self, row: TaskRow) -> None:
        """Once everything journaled so far, this task's end included, is committed: its log
        entry is released, its file (a seed upload unless ``keep_upload``, a retried dead
        task's copy) removed, and an older master's intake record with it."""
        kept = parse_ref(row.payload_path) is not None or is_db_ref(row.payload_path)
        path = None if kept else Path(row.payload_path)
        if path is not None and self.settings.master.keep_upload and row.origin == "seed":
            path = None
        plog, data_dir, task_id = self.plog, self.data_dir, row.id
        legacy = self.legacy_records

        def remove() -> None:
            plog.release([task_id])
            if path is not None:
                remove_quietly(path)
            if legacy:
                remove_record(data_dir, task_id)

        self.journal.after_commit(remove)
