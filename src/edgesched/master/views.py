"""How tasks and devices are serialised: JSON (REST API), CSV (timings); protobuf is
``edgesched.wire``'s. Only serialisers: no state, no I/O."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from edgesched.core.state import Device, TaskState
from edgesched.journal.base import TaskRow
from edgesched.stages import STAGE_FIELDS


def task_json(row: TaskRow, note: str = "") -> dict[str, Any]:
    return {
        "note": note,
        "id": row.id,
        "idempotency_key": row.idem_key,
        "client_id": row.client_id,
        "state": row.state,
        "task_type": row.task_type,
        "filename": row.filename,
        "size_bytes": row.payload_size,
        "attempts": row.attempt,
        "failures": row.failures,
        "device_id": row.device_id,
        "device_type": row.device_type,
        "submitted_unix_ms": row.submitted_ms,
        "finished_unix_ms": row.finished_ms,
        "timings": row.timings,
        "result": {"label": row.label, "detections": [d.as_dict() for d in row.detections]}
        if row.state == TaskState.DONE.value
        else None,
        "errors": row.errors,
        "error": row.error,
        "origin": row.origin,
        "delivery": row.delivery,
    }


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def device_json(device: Device, now: float) -> dict[str, Any]:
    m = device.metrics
    return {
        "id": device.id,
        "type": device.device_type,
        "emulated": device.emulated,
        "hostname": device.hostname,
        "state": device.shown_state,
        "draining": device.draining,
        "cpu": m.cpu,
        "memory": m.memory,
        "xpu": m.xpu if m.xpu >= 0 else None,
        "xpu_memory": m.xpu_memory if m.xpu_memory >= 0 else None,
        "temperature_c": _num(m.temperature_c),
        "power_w": _num(m.power_w),
        "bandwidth_mbps": m.bandwidth_mbps,
        "latency_ms": m.latency_ms,
        "probe": m.probe,
        "slots": device.slots,
        "free_slots": device.free_slots,
        "running": len(device.inflight),
        "task_types": sorted(device.task_types),
        "tasks_done": device.tasks_done,
        "mean_service_ms": round(device.mean_service_ms, 3),
        "heartbeat_age_s": round(max(0.0, now - device.last_seen), 3),
        "info": device.info,
    }


CSV_COLUMNS = (
    "id",
    "state",
    "task_type",
    "filename",
    "device_id",
    "device_type",
    "attempts",
    "submitted_unix_ms",
    "finished_unix_ms",
    *STAGE_FIELDS,
    "error",
)


#: a spreadsheet takes a cell starting with one of these as a formula (CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """Text a spreadsheet would run as a formula is shown as text: a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def timings_csv(rows: list[TaskRow]) -> str:
    """Tasks with their stage durations, as CSV (a header line, then one row per task)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        timings = row.timings or {}
        writer.writerow(
            csv_cell(cell)
            for cell in [
                row.id,
                row.state,
                row.task_type,
                row.filename,
                row.device_id,
                row.device_type,
                row.attempt,
                row.submitted_ms,
                row.finished_ms,
                *(round(float(timings.get(k, 0.0)), 3) for k in STAGE_FIELDS),
                row.error,
            ]
        )
    return buffer.getvalue()
