"""The seed's HTTP routes on the gateway: ``POST /schedule`` and ``GET /nodes``, plus the route a
split task-manager forwards uploads to."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, field_validator

from edgesched.core.state import DeviceState, TaskState
from edgesched.errors import BadInputError, EdgeschedError
from edgesched.master.compat.intake import (
    ScheduleError,
    SeedIntake,
    SeedUpload,
    parse_schedule,
    reply_path,
    schedule,
    schedule_strategy,
)
from edgesched.master.errmap import http_status, printable
from edgesched.master.master import Master


class SeedReply(BaseModel):
    status: str
    msg: str


class NodeMetrics(BaseModel):
    cpu_used: float
    mem_used: float
    xpu_used: float
    net_latency_ms: float
    net_bandwidth_mbps: float


class SubReq(BaseModel):
    sub_req_id: str
    req_id: str
    client_ip: str
    total_task_num: int
    waiting_task_num: int
    processing_task_num: int
    result_ready_task_num: int
    rst_sended_task_num: int
    status: str
    lifecycle_state: str


class Node(BaseModel):
    device_id: str
    device_ip: str
    device_type: str
    services: list[str]
    status: str
    metrics: NodeMetrics
    sub_req_count: int
    sub_reqs: list[SubReq]


class Nodes(BaseModel):
    nodes: list[Node]


class ForwardedUpload(BaseModel):
    client_ip: str
    filename: str = ""
    content_b64: str
    tasktype: str = "yolo"
    req_id: str = ""
    total_num: int = 0
    strategy: str = ""
    stream_req_id: str = ""  #: the request id of its UploadImages stream, when it has none

    @field_validator("*")
    @classmethod
    def _unicode(cls, value: Any) -> Any:
        """JSON can spell a lone surrogate ("\\ud800"); the journal cannot store one."""
        if isinstance(value, str) and printable(value) != value:
            raise ValueError("not valid Unicode (a lone surrogate)")
        return value


class UploadSaved(BaseModel):
    filename: str
    saved_path: str
    task_id: str


SCHEDULE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["ip", "tasktype"],
                    "properties": {
                        "ip": {"type": "string"},
                        "tasktype": {"type": "string"},
                        "filename": {"type": "string"},
                        "filenames": {"type": "array", "items": {"type": "string"}},
                        "filepath": {"type": "string"},
                        "req_id": {"type": "string"},
                        "total_num": {"type": "integer"},
                    },
                }
            }
        },
    }
}


def _error(msg: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"status": "error", "msg": printable(msg)}, status_code=status)


Guard = Callable[..., Awaitable[None]]


def seed_router(
    master: Master, intake: SeedIntake, changes: Guard, reads: Guard, seed: Guard
) -> APIRouter:
    """The seed's HTTP routes (``/schedule``, node lists, forwarded uploads): decode the
    seed's bodies, call ``Master`` and ``SeedIntake``, encode the seed's replies. Owns no
    state; the routes may not touch the core, the journal or the payload files directly."""
    router = APIRouter()
    unauthorised: dict[int | str, dict[str, Any]] = {
        401: {"model": SeedReply, "description": "missing or wrong API token"}
    }

    @router.post(
        "/schedule",
        status_code=202,
        response_model=SeedReply,
        responses={
            200: {"model": SeedReply, "description": "a retry of a request already finished"},
            400: {"model": SeedReply},
            413: {"model": SeedReply},
            **unauthorised,
        },
        openapi_extra=SCHEDULE_BODY,
        dependencies=[Depends(seed)],
    )
    async def schedule_route(
        request: Request,
        stargety: str | None = Query(None, description="load, 负载贪心, roundrobin, round_robin"),
        strategy: str | None = Query(None, description="the same, spelled correctly"),
    ) -> Any:
        """The seed gateway's intake: journal a task per named upload, then answer 202."""
        try:
            chosen = schedule_strategy(stargety, strategy)
            parsed = parse_schedule(await request.body())
            scheduled = await schedule(master, parsed, chosen)
        except ScheduleError as exc:
            return _error(exc.msg, exc.status)
        except EdgeschedError as exc:
            return _error(str(exc), http_status(exc))
        finished = [s.row for s in scheduled if not s.new and TaskState(s.row.state).final]
        if len(finished) == len(scheduled):
            # a retry of a request whose tasks already ended: nothing is queued, so no 202
            states = sorted({row.state for row in finished})
            return JSONResponse(
                {"status": "/".join(states), "msg": "task already finished"}, status_code=200
            )
        return JSONResponse({"status": "queued", "msg": "task enqueued"}, status_code=202)

    @router.get(
        "/nodes", response_model=Nodes, responses=unauthorised, dependencies=[Depends(reads)]
    )
    async def nodes() -> dict[str, Any]:
        """Devices in the seed gateway's shape."""
        out = []
        for device in sorted(master.core.devices.values(), key=lambda d: d.id):
            online = device.state is DeviceState.ONLINE
            m = device.metrics
            sub_reqs = []
            for task_id, _ in sorted(device.inflight):
                row = master.rows.get(task_id)
                client_ip = row.client_addr or row.client_id if row else ""
                sub_reqs.append(
                    {
                        "sub_req_id": task_id,
                        "req_id": row.metadata.get("req_id", task_id) if row else task_id,
                        "client_ip": client_ip,
                        "total_task_num": 1,
                        "waiting_task_num": 0,
                        "processing_task_num": 1,
                        "result_ready_task_num": 0,
                        "rst_sended_task_num": 0,
                        "status": "processing",
                        "lifecycle_state": "running",
                    }
                )
            out.append(
                {
                    "device_id": device.id,
                    "device_ip": device.address,
                    "device_type": device.device_type,
                    "services": sorted(device.task_types),
                    "status": "online" if online else "offline",
                    "metrics": {
                        "cpu_used": m.cpu if online else 0.0,
                        "mem_used": m.memory if online else 0.0,
                        "xpu_used": max(0.0, m.xpu) if online else 0.0,
                        "net_latency_ms": m.latency_ms if online else 0.0,
                        "net_bandwidth_mbps": m.bandwidth_mbps if online else 0.0,
                    },
                    "sub_req_count": len(sub_reqs),
                    "sub_reqs": sub_reqs,
                }
            )
        return {"nodes": out}

    @router.post(
        "/api/v1/seed/upload",
        response_model=UploadSaved,
        responses={400: {"model": SeedReply}, 413: {"model": SeedReply}, **unauthorised},
        dependencies=[Depends(changes)],
    )
    async def forwarded_upload(body: ForwardedUpload) -> Any:
        """Where a split ``edgesched task-manager`` forwards each ImageUpload picture."""
        try:
            try:
                payload = base64.b64decode(body.content_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadInputError(f"invalid base64 in content_b64: {exc}") from None
            upload = SeedUpload(
                body.filename,
                payload,
                body.tasktype,
                body.req_id,
                body.total_num,
                body.stream_req_id,
            )
            strategy = schedule_strategy(body.strategy, None) if body.strategy else ""
            row, name = await intake.upload(body.client_ip, upload, strategy)
        except ScheduleError as exc:
            return _error(exc.msg, exc.status)
        except EdgeschedError as exc:
            return _error(str(exc), http_status(exc))
        return {"filename": name, "saved_path": reply_path(row), "task_id": row.id}

    return router
