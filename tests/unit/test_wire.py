"""edgesched.wire: protobuf ⇄ domain types, and the enums whose strings must not change."""

from __future__ import annotations

import json
import math

from edgesched.inference.labels import Detection
from edgesched.journal.base import TaskRow
from edgesched.kinds import FailureKind, TaskState
from edgesched.v1 import common_pb2
from edgesched.wire import link, results, tasks

D = Detection(class_id=3, x1=1, y1=2, x2=30, y2=40, confidence=0.1234567, class_name="figure")


def test_a_detection_survives_the_wire_rounded_as_the_master_keeps_it() -> None:
    back = results.detection_from_pb(results.detection_pb(D))
    assert back == Detection(3, 1, 2, 30, 40, 0.123457, "figure")


def test_a_received_detection_is_cleaned() -> None:
    pb = common_pb2.Detection(class_id=1, confidence=math.nan, class_name="x" * 100)
    d = results.detection_from_pb(pb, name_limit=8)
    assert d.confidence == 0.0 and d.class_name == "x" * 7 + "…"


def test_board_timings_drop_faulty_figures() -> None:
    pb = results.board_timings_pb({"queue_ms": 2.5, "total_ms": -1.0, "decode_ms": 1e12})
    assert results.board_timings_from_pb(pb, max_ms=86_400_000.0) == {"queue_ms": 2.5}


def test_a_task_result_carries_the_typed_detections_and_the_state() -> None:
    row = TaskRow("t1", "c", "k", "layout", "a.png", "/p", 3, 1, state=TaskState.DONE.value)
    row.detections = [D]
    pb = tasks.task_result_pb(row)
    assert tasks.state_of(pb) is TaskState.DONE and tasks.state_name(pb) == "done"
    (back,) = tasks.detections_of(pb)  # confidence travels as a 32-bit float
    assert back == Detection(3, 1, 2, 30, 40, back.confidence, "figure")
    assert math.isclose(back.confidence, D.confidence, rel_tol=1e-6)
    assert tasks.state_of(common_pb2.TaskResult()) is None
    assert tasks.state_name(common_pb2.TaskResult()) == "unspecified"
    row.state = "from-the-future"
    assert tasks.task_result_pb(row).state == common_pb2.TASK_STATE_UNSPECIFIED


def test_agent_messages_round_trip_through_the_outbox_encoding() -> None:
    sent = link.task_done(
        task_id="t1",
        attempt=2,
        label="3 1 2 30 40 0.123457\n",
        detections=[D],
        timings={"total_ms": 5.0},
        backend="onnx",
        payload_bytes=9,
    )
    back = link.decode_agent_message(link.encode(sent))
    assert link.kind_of(back) == "result" and back == sent
    failed = link.task_failed("t1", 2, FailureKind.BAD_INPUT, "unreadable")
    assert failed.failure.kind == "bad_input"


def test_the_enums_are_the_strings_the_journal_and_json_always_held() -> None:
    kind: str = FailureKind.BAD_INPUT  # what a journal column or a JSON field receives
    assert kind == "bad_input" and f"{FailureKind.STALLED}" == "stalled"
    assert json.dumps({"kind": FailureKind.DEADLINE, "state": TaskState.DEAD}) == (
        '{"kind": "deadline", "state": "dead"}'
    )
    assert "backend" in frozenset({FailureKind.BACKEND})  # a plain string from the wire matches
    assert [s.value for s in TaskState] == [
        "queued",
        "assigned",
        "running",
        "done",
        "dead",
        "cancelled",
    ]
