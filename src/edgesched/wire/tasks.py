"""Tasks on the client API (``client.proto``, ``common.proto``): states, submissions, results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgesched.inference.labels import Detection
from edgesched.kinds import TaskState
from edgesched.stages import STAGE_FIELDS
from edgesched.v1 import client_pb2, common_pb2
from edgesched.wire.results import board_timings_pb, detection_pb

if TYPE_CHECKING:  # the master's; a board's client never loads the journal
    from edgesched.journal.base import TaskRow

__all__ = [
    "GetTaskRequest",
    "SubmitBatch",
    "SubmitBatchReply",
    "SubmitReply",
    "SubmitRequest",
    "TaskResult",
    "TaskResultBatch",
    "WatchRequest",
    "detections_of",
    "get_request",
    "state_name",
    "state_of",
    "state_pb",
    "submit_batch",
    "submit_reply",
    "submit_request",
    "task_result_pb",
    "watch_request",
]

# The message classes, for annotations: code outside wire/ holds them, never builds them.
TaskResult = common_pb2.TaskResult
SubmitRequest = client_pb2.SubmitRequest
SubmitReply = client_pb2.SubmitReply
WatchRequest = client_pb2.WatchRequest
GetTaskRequest = client_pb2.GetTaskRequest
SubmitBatch = client_pb2.SubmitBatch
SubmitBatchReply = client_pb2.SubmitBatchReply
TaskResultBatch = client_pb2.TaskResultBatch

_PB_STATE: dict[str, common_pb2.TaskState.ValueType] = {
    TaskState.QUEUED: common_pb2.TASK_STATE_QUEUED,
    TaskState.ASSIGNED: common_pb2.TASK_STATE_ASSIGNED,
    TaskState.RUNNING: common_pb2.TASK_STATE_RUNNING,
    TaskState.DONE: common_pb2.TASK_STATE_DONE,
    TaskState.DEAD: common_pb2.TASK_STATE_DEAD,
    TaskState.CANCELLED: common_pb2.TASK_STATE_CANCELLED,
}
_STATE_OF_PB = {pb: TaskState(state) for state, pb in _PB_STATE.items()}


def state_pb(state: str) -> common_pb2.TaskState.ValueType:
    """A journal state on the wire (UNSPECIFIED for one this build does not know)."""
    return _PB_STATE.get(state, common_pb2.TASK_STATE_UNSPECIFIED)


def state_of(result: TaskResult | SubmitReply) -> TaskState | None:
    """A result's or reply's state (None: unspecified, or one this build does not know)."""
    return _STATE_OF_PB.get(result.state)


def state_name(result: TaskResult | SubmitReply) -> str:
    """The state as the REST API and reports spell it ("unspecified" when none)."""
    state = state_of(result)
    return state.value if state is not None else "unspecified"


def detections_of(result: TaskResult) -> list[Detection]:
    return [
        Detection(d.class_id, d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_name)
        for d in result.detections
    ]


def submit_request(
    *,
    client_id: str,
    idempotency_key: str,
    task_type: str,
    filename: str,
    payload: bytes,
    metadata: Mapping[str, str] | None = None,
    deadline_ms: int = 0,
    strategy: str = "",
    priority: int = 0,
) -> SubmitRequest:
    return client_pb2.SubmitRequest(
        client_id=client_id,
        idempotency_key=idempotency_key,
        task_type=task_type,
        filename=filename,
        payload=payload,
        metadata=dict(metadata or {}),
        deadline_ms=deadline_ms,
        strategy=strategy,
        priority=priority,
    )


def submit_batch(requests: list[SubmitRequest]) -> SubmitBatch:
    return client_pb2.SubmitBatch(requests=requests)


def watch_request(client_id: str = "", task_ids: list[str] | None = None) -> WatchRequest:
    return client_pb2.WatchRequest(client_id=client_id, task_ids=task_ids or [])


def get_request(task_id: str) -> GetTaskRequest:
    return client_pb2.GetTaskRequest(task_id=task_id)


def submit_reply(row: TaskRow, duplicate: bool) -> SubmitReply:
    return client_pb2.SubmitReply(
        task_id=row.id,
        idempotency_key=row.idem_key,
        duplicate=duplicate,
        state=state_pb(row.state),
    )


def task_result_pb(row: TaskRow) -> TaskResult:
    """A journaled task as the client API returns it."""
    timings = row.timings or {}
    board = timings.get("board") or {}
    return common_pb2.TaskResult(
        task_id=row.id,
        idempotency_key=row.idem_key,
        state=state_pb(row.state),
        task_type=row.task_type,
        filename=row.filename,
        device_id=row.device_id,
        device_type=row.device_type,
        attempts=row.attempt,
        label=row.label,
        detections=[detection_pb(d) for d in row.detections],
        errors=[
            common_pb2.AttemptError(
                attempt=e.get("attempt", 0),
                device_id=e.get("device_id", ""),
                kind=e.get("kind", ""),
                message=e.get("message", ""),
                at_unix_ms=int(e.get("at_unix_ms", 0)),
                counted=bool(e.get("counted", False)),
            )
            for e in row.errors
        ],
        timings=common_pb2.StageTimings(
            **{k: float(timings.get(k, 0.0)) for k in STAGE_FIELDS},
            board=board_timings_pb(board),
        ),
        error=row.error,
        submitted_unix_ms=row.submitted_ms,
        finished_unix_ms=row.finished_ms,
        metadata=row.metadata,
    )
