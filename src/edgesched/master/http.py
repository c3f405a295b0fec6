"""The HTTP gateway: REST API under /api/v1, health, and the link discovery the agents use."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgesched import __version__
from edgesched.config import reads_need_token
from edgesched.errors import AuthError, EdgeschedError
from edgesched.master.auth import token_ok
from edgesched.master.bodylimit import BodyLimit
from edgesched.master.compat.http import seed_router
from edgesched.master.compat.intake import SeedIntake
from edgesched.master.dashboard import dashboard_router
from edgesched.master.errmap import http_status, printable
from edgesched.master.master import Master
from edgesched.master.views import device_json, task_json, timings_csv

TaskStateName = Literal["queued", "assigned", "running", "done", "dead", "cancelled"]


class ErrorOut(BaseModel):
    status: str = "error"
    msg: str


class Health(BaseModel):
    status: str  #: "ok", or "degraded" while the master takes no new work (``reason`` says why)
    version: str
    devices_online: int
    tasks_pending: int
    reason: str = ""
    #: "leader": this master serves (a standby answers 503 with "role": "standby" instead)
    role: str = "leader"


class LinkInfo(BaseModel):
    link_port: int
    protocol: str


class DeviceOut(BaseModel):
    id: str
    type: str
    emulated: bool
    hostname: str
    state: str
    draining: bool
    cpu: float
    memory: float
    xpu: float | None
    xpu_memory: float | None
    temperature_c: float | None
    power_w: float | None
    bandwidth_mbps: float
    latency_ms: float
    probe: str
    slots: int
    free_slots: int
    running: int
    task_types: list[str]
    tasks_done: int
    mean_service_ms: float
    heartbeat_age_s: float
    info: dict[str, str]


class DeviceList(BaseModel):
    devices: list[DeviceOut]


class TaskResultOut(BaseModel):
    label: str
    detections: list[dict[str, Any]]


class TaskOut(BaseModel):
    note: str  #: why a queued task waits, when it does
    id: str
    idempotency_key: str
    client_id: str
    state: str
    task_type: str
    filename: str
    size_bytes: int
    attempts: int
    failures: int
    device_id: str
    device_type: str
    submitted_unix_ms: int
    finished_unix_ms: int
    timings: dict[str, Any]
    result: TaskResultOut | None
    errors: list[dict[str, Any]]
    error: str
    origin: str
    delivery: str


class RetryOut(BaseModel):
    task: TaskOut
    attempts_reset: bool
    msg: str


class Summary(BaseModel):
    devices: dict[str, int]
    tasks: dict[str, int]
    queue_depth: int
    retries: int


class TaskList(BaseModel):
    tasks: list[TaskOut]
    count: int


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "not found"},
    409: {"model": ErrorOut, "description": "conflicts with the task's state"},
}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
}


def make_http_app(master: Master, link_port: int, intake: SeedIntake | None = None) -> FastAPI:
    app = FastAPI(title="edgesched gateway", version=__version__)
    # base64 makes an upload 4/3 larger; the JSON around it stays under 1 MiB
    app.add_middleware(
        BodyLimit,
        limit=lambda: master.settings.master.max_request_bytes,
        routes={
            "/api/v1/seed/upload": lambda: (
                master.settings.master.max_upload_bytes * 4 // 3 + 1024 * 1024
            )
        },
    )
    scheme = HTTPBearer(auto_error=False, description="the API token (edgesched token show --api)")

    def check(credentials: HTTPAuthorizationCredentials | None) -> None:
        presented = credentials.credentials if credentials is not None else ""
        if not token_ok(presented, master.api_token.current()):
            raise AuthError("missing or wrong API token: send 'Authorization: Bearer <token>'")

    async def changes(
        credentials: HTTPAuthorizationCredentials | None = Depends(scheme),
    ) -> None:
        """Routes that change something need the API token unless auth is off."""
        if master.settings.master.auth != "off":
            check(credentials)

    async def reads(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        """Reads (results, detections, client ids, host names, metrics) need the API token
        when the master listens beyond loopback, or always with auth_read = on."""
        if reads_need_token(master.settings.master):
            check(credentials)

    async def seed(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        """The seed's /schedule stays open unless --require-auth (auth = all)."""
        if master.settings.master.auth == "all":
            check(credentials)

    app.include_router(
        seed_router(master, intake or SeedIntake(master), changes=changes, reads=reads, seed=seed)
    )
    app.include_router(dashboard_router(master, reads=reads, unauthorised=AUTH_ERRORS))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which JSON cannot always carry (a NaN in
        # the body made that a 500): loc, msg and type are what the declared 422 needs
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own errors (a body that is not JSON, an unknown path) in the shape of ours
        return JSONResponse(
            {"status": "error", "msg": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(EdgeschedError)
    async def _edgesched_error(request: Request, exc: EdgeschedError) -> JSONResponse:
        message = printable(str(exc))
        return JSONResponse({"status": "error", "msg": message}, status_code=http_status(exc))

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        online = sum(1 for d in master.core.devices.values() if d.state.value == "online")
        problem = master.space_problem()
        return {
            "status": "degraded" if problem else "ok",
            "version": __version__,
            "devices_online": online,
            "tasks_pending": len(master.core.tasks),
            "reason": problem,
            "role": "leader",
        }

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            401: {
                "description": "missing or wrong API token",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                },
            },
        },
        dependencies=[Depends(reads)],
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: tasks by state, queue, retries, devices, stage histograms."""
        return PlainTextResponse(
            generate_latest(master.metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/api/v1/link", response_model=LinkInfo)
    async def link() -> dict[str, Any]:
        """Where agents open their link (the master's gRPC port)."""
        return {"link_port": link_port, "protocol": "1.0"}

    @app.get(
        "/api/v1/devices",
        response_model=DeviceList,
        responses=AUTH_ERRORS,
        dependencies=[Depends(reads)],
    )
    async def devices() -> dict[str, Any]:
        now = master.clock.monotonic()
        listed = sorted(master.core.devices.values(), key=lambda d: d.id)
        return {"devices": [device_json(d, now) for d in listed]}

    @app.get(
        "/api/v1/tasks",
        response_model=TaskList,
        responses=AUTH_ERRORS,
        dependencies=[Depends(reads)],
    )
    async def tasks(
        state: TaskStateName | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        rows = await master.list_tasks(state, limit, offset)
        return {"tasks": [task_json(r) for r in rows], "count": len(rows)}

    @app.get(
        "/api/v1/tasks/export.csv",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
            401: {
                "description": "missing or wrong API token",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                },
            },
        },
        dependencies=[Depends(reads)],
    )
    async def export_csv(
        state: TaskStateName | None = None, limit: int = Query(10_000, ge=1, le=100_000)
    ) -> PlainTextResponse:
        """Timing records (the seed's task execution statistics): one row per task, newest
        first, with its stage durations in milliseconds."""
        rows = await master.list_tasks(state, limit, 0)
        return PlainTextResponse(timings_csv(rows), media_type="text/csv")

    @app.get(
        "/api/v1/tasks/{task_id}",
        response_model=TaskOut,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=[Depends(reads)],
    )
    async def task(task_id: str) -> dict[str, Any]:
        row = await master.get_task(task_id)
        return task_json(row, master.waiting_note(row))

    @app.post(
        "/api/v1/devices/{device_id}/drain",
        response_model=DeviceOut,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=[Depends(changes)],
    )
    async def drain(device_id: str) -> dict[str, Any]:
        """The device finishes what it runs and takes nothing new."""
        return device_json(master.drain(device_id, True), master.clock.monotonic())

    @app.post(
        "/api/v1/devices/{device_id}/undrain",
        response_model=DeviceOut,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=[Depends(changes)],
    )
    async def undrain(device_id: str) -> dict[str, Any]:
        """The device takes new tasks again."""
        return device_json(master.drain(device_id, False), master.clock.monotonic())

    @app.get(
        "/api/v1/summary",
        response_model=Summary,
        responses=AUTH_ERRORS,
        dependencies=[Depends(reads)],
    )
    async def summary() -> dict[str, Any]:
        """The cluster at a glance: devices by state, tasks by state, queue depth."""
        devices: dict[str, int] = {}
        for d in master.core.devices.values():
            state = d.shown_state
            devices[state] = devices.get(state, 0) + 1
        return {
            "devices": devices,
            "tasks": await master.task_counts(),
            "queue_depth": master.core.queue_depth(),
            "retries": master.core.retries,
        }

    @app.post(
        "/api/v1/tasks/{task_id}/retry",
        response_model=RetryOut,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=[Depends(changes)],
    )
    async def retry(task_id: str) -> dict[str, Any]:
        """Queues a dead task again; its attempt count is reset (its error history stays)."""
        row = await master.retry(task_id)
        return {
            "task": task_json(row),
            "attempts_reset": True,
            "msg": "queued again; its failure count was reset to 0",
        }

    @app.post(
        "/api/v1/tasks/{task_id}/cancel",
        response_model=TaskOut,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=[Depends(changes)],
    )
    async def cancel(task_id: str) -> dict[str, Any]:
        return task_json(await master.cancel(task_id, "cancelled through the API"))

    return app
