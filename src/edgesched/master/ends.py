"""A task's end: its watchers told, its metrics counted, its payload removed or pushed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edgesched.config import Settings
from edgesched.core.state import Task, TaskState
from edgesched.journal.base import Journal, TaskRow
from edgesched.master.admission import Admission
from edgesched.master.hub import ResultHub
from edgesched.master.metrics import MasterMetrics
from edgesched.master.payloads import PayloadCache, remove_quietly
from edgesched.master.storage import remove_record

log = logging.getLogger("edgesched.master")


class TaskEnds:
    """Carries out the core's ``Finished``: takes the task's row out of the unfinished ones,
    frees its client's in-flight place, counts it, publishes it to the result hub's watchers,
    hands a seed task's result to the pusher (``on_seed_done``) and removes a payload no
    longer needed once the journal holds the end. Owns the finished counts. It may not change
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
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.rows = rows
        self.payloads = payloads
        self.admission = admission
        self.hub = hub
        self.metrics = metrics
        self.data_dir = data_dir
        self.finished_total: dict[str, int] = {}
        #: called with the row of every seed task that ends done (the result pusher)
        self.on_seed_done: Callable[[TaskRow], None] | None = None

    def finished(self, task: Task) -> None:
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
