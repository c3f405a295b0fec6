"""What a journal stores (TaskRow) and the interface every journal implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from edgesched.inference.labels import Detection
from edgesched.kinds import TaskState


@dataclass
class TaskRow:
    """One task as the journal keeps it. Times are Unix milliseconds of the master's clock."""

    id: str
    client_id: str
    idem_key: str
    task_type: str
    filename: str
    payload_path: str
    payload_size: int
    submitted_ms: int
    state: str = TaskState.QUEUED.value
    payload_sha256: str = ""
    attempt: int = 0
    failures: int = 0
    device_id: str = ""
    device_type: str = ""
    updated_ms: int = 0
    finished_ms: int = 0
    label: str = ""
    detections: list[Detection] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    origin: str = "native"  #: "native" (client API) or "seed" (ImageUpload, /schedule)
    strategy: str = ""
    deadline_ms: int = 0
    client_addr: str = ""  #: where a seed client's /recv_rst lives
    delivery: str = ""  #: seed push: "", "pending", "delivered", "undeliverable"

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def json_value(name: str, value: Any) -> Any:
    """A field's value as JSON holds it (the journal's JSON columns, the intake records)."""
    if name == "detections":
        return [d.as_dict() for d in value]
    return value


def from_json_value(name: str, value: Any) -> Any:
    """The inverse of ``json_value``."""
    if name == "detections":
        return [Detection.from_dict(d) for d in value]
    return value


#: how the ``fault`` of a journal whose database cannot be reached begins (PostgreSQL): new
#: work is refused as unavailable (try again), not as a full disk
UNAVAILABLE = "database unavailable"


#: Fields that change after submission (what an update writes).
MUTABLE_FIELDS = (
    "state",
    "attempt",
    "failures",
    "device_id",
    "device_type",
    "updated_ms",
    "finished_ms",
    "label",
    "detections",
    "timings",
    "errors",
    "error",
    "delivery",
)


#: stages what goes with a new row (its payload-log entry), in the journal's thread, and returns
#: how to take it back (called when the row is not inserted: a repeated key, a failed statement)
Before = Callable[[], Callable[[], None] | None]


class CommitHook(Protocol):
    """Something written with every journal transaction, right before it commits (the
    payload log). Called in the journal's own thread."""

    def before_commit(self) -> None:
        """Writes what the transaction's operations staged; raises to fail the transaction
        (an ``OSError`` ENOSPC or ``DiskFullError`` fails it as a full disk does)."""
        ...

    def committed(self) -> None:
        """The transaction committed: what ``before_commit`` wrote is kept."""
        ...

    def discard(self) -> None:
        """The transaction was rolled back, or is redone one operation at a time: drop what
        was staged and cut off what was written."""
        ...


class Journal(Protocol):
    """Durable task storage. ``insert`` is durable when it returns; updates are ordered."""

    #: why the journal cannot write now ("" when it can); what failed is kept and retried
    fault: str
    #: write transactions committed so far (read in the journal's thread, the transaction in
    #: progress commits as ``sequence + 1``)
    sequence: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def insert(self, row: TaskRow, before: Before | None = None) -> tuple[TaskRow, bool]:
        """Stores a new task; returns (the stored row, True if it was a duplicate key).

        ``before`` (staging the payload log's entry, which may set ``row.payload_path``) runs
        first, in the journal's own thread, and its error fails the insert: the row is never
        durable without its payload (the hooks write what it staged before the commit). What
        it returns is called when the row is not inserted: nothing staged for it is written.
        """
        ...

    async def insert_many(
        self, items: list[tuple[TaskRow, Before | None]]
    ) -> list[tuple[TaskRow, bool] | Exception]:
        """``insert`` for many tasks in one journal operation (one transaction); one outcome
        per item, in order: (the stored row, duplicate) as ``insert`` returns, or the exception
        that item met. Each ``before`` runs in the journal's thread just before its row; one
        item's failure does not sink the others (a repeated key is no failure: the first row).
        A failure of the whole transaction (a full disk) raises for every item.
        """
        ...

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        """Queues an update of mutable fields; applied in order, committed soon."""
        ...

    def add_hook(self, hook: CommitHook) -> None:
        """``hook`` is called around every write transaction from now on."""
        ...

    def after_commit(self, action: Callable[[], None]) -> None:
        """Runs ``action`` (in the journal's thread) once everything queued before it is
        committed: how a payload is deleted only after the journal records its task's end."""
        ...

    async def flush(self) -> None:
        """Returns when every queued update is committed (on a full disk: once it is)."""
        ...

    async def task_ids(self) -> set[str]:
        """The id of every task the journal holds."""
        ...

    async def get(self, task_id: str) -> TaskRow | None: ...

    async def find_key(self, client_id: str, idem_key: str) -> TaskRow | None: ...

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]: ...

    async def unfinished(self) -> list[TaskRow]: ...

    async def counts(self) -> dict[str, int]: ...

    async def prune(
        self,
        before_ms: int,
        keep_rows: int,
        forget: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> list[tuple[str, str]]:
        """Deletes finished tasks older than ``before_ms`` and the oldest beyond ``keep_rows``
        (never a result still waiting to be pushed); returns their (id, payload path).
        ``forget`` gets them first, before the rows go (in the journal's thread)."""
        ...

    async def agents(self) -> dict[str, str]:
        """Admitted agents: id → sha256 of the credential they were given."""
        ...

    async def add_agent(self, agent_id: str, credential_sha256: str, device_type: str) -> None: ...

    async def remove_agents(self, agent_ids: list[str]) -> None:
        """Forgets agents (long dead): they need the join token to come back."""
        ...

    async def pending_deliveries(self) -> list[TaskRow]:
        """Done tasks whose result still has to be pushed to a seed client."""
        ...

    async def next_counter(self, name: str, floor: int = 0) -> int:
        """Increments and returns a named counter (the seed's per-client file numbers)."""
        ...
