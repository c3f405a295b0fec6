"""The live dashboard the gateway serves at ``/``, and the feed behind it.

``GET /`` and ``GET /static/dashboard.{js,css}`` serve the page from the package (no external
URL anywhere; a Content-Security-Policy holds the page to its own origin). The page draws
everything itself from ``GET /api/v1/events``: asked with ``Accept: text/event-stream`` that is
a server-sent-events stream with one JSON snapshot of the cluster a second; asked otherwise it
answers one snapshot as plain JSON. The stream ends when the client goes away or the master
stops (``master.stopping``), so it never holds up a shutdown.

Throughput and latency percentiles come from a sliding window over the tasks that finished in
the last ``WINDOW_S`` seconds, recorded as the master announces them on its result hub.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from edgesched.core.state import TaskState
from edgesched.journal.base import TaskRow
from edgesched.master.master import Master
from edgesched.master.views import device_json
from edgesched.stats import percentile

Guard = Callable[..., Awaitable[None]]

WINDOW_S = 10.0  #: throughput, latency percentiles and tasks per device cover this span
INTERVAL_S = 1.0  #: one snapshot a second on each stream
POLL_S = 0.2  #: how often a waiting stream looks whether the master is stopping
CACHE_S = 0.5  #: streams within this of each other share one snapshot
RECENT = 25  #: tasks in the "recent" list
FAILURES = 20  #: tasks in the "failures" list (dead ones, and ones that failed attempts)
RETRY_MS = 2000  #: what the stream tells clients to wait before reconnecting

#: the page may load nothing from anywhere but the gateway itself
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class JavaScriptResponse(Response):
    media_type = "text/javascript"


class CSSResponse(Response):
    media_type = "text/css"


# ---- the snapshot ----------------------------------------------------------------------------


class AttemptErrorOut(BaseModel):
    attempt: int = 0
    device_id: str = ""
    kind: str = ""
    message: str = ""
    at_unix_ms: int = 0
    counted: bool = False


class TaskBrief(BaseModel):
    id: str
    state: str
    task_type: str
    filename: str
    client_id: str
    device_id: str
    device_type: str
    attempts: int
    failures: int
    submitted_unix_ms: int
    finished_unix_ms: int
    end_to_end_ms: float | None = Field(description="done tasks: submission to result")
    error: str = Field(description="why a dead or cancelled task ended so")
    errors: list[AttemptErrorOut] = Field(description="its failed attempts, the last three")


class WindowOut(BaseModel):
    seconds: float = Field(description="the span the figures cover (WINDOW_S once running)")
    done: int
    dead: int
    cancelled: int
    throughput_per_s: float = Field(description="tasks done per second over the span")
    latency_p50_ms: float | None = Field(description="median end-to-end time of those tasks")
    latency_p95_ms: float | None
    per_device: dict[str, int] = Field(description="tasks done in the span, per device id")


class HedgesOut(BaseModel):
    started: int = Field(description="hedged attempts sent since start")
    won: int = Field(description="tasks whose accepted result came from a hedge")
    lost: int = Field(description="hedged tasks whose original attempt won")
    wasted_s: float = Field(description="running time of the attempts a winner ended")


class Snapshot(BaseModel):
    seq: int = Field(description="increases with each snapshot taken")
    time_unix_ms: int
    interval_s: float = Field(description="how often the stream sends a snapshot")
    devices: list[dict[str, Any]] = Field(description="as GET /api/v1/devices lists them")
    device_states: dict[str, int] = Field(description="devices by state, as /api/v1/summary")
    tasks: dict[str, int] = Field(description="tasks in the journal by state")
    queue_depth: int
    retries: int
    hedges: HedgesOut
    finished_since_start: dict[str, int] = Field(description="final states since start")
    window: WindowOut
    recent: list[TaskBrief] = Field(description="the newest tasks, whatever their state")
    failures: list[TaskBrief] = Field(
        description="dead tasks, then tasks that are retrying or ended after failed attempts"
    )
    watchers: int = Field(description="event streams open now")


class DashboardError(BaseModel):
    status: str = "error"
    msg: str


def brief(row: TaskRow) -> dict[str, Any]:
    end_to_end = row.timings.get("end_to_end_ms") if row.state == TaskState.DONE.value else None
    return {
        "id": row.id,
        "state": row.state,
        "task_type": row.task_type,
        "filename": row.filename,
        "client_id": row.client_id,
        "device_id": row.device_id,
        "device_type": row.device_type,
        "attempts": row.attempt,
        "failures": row.failures,
        "submitted_unix_ms": row.submitted_ms,
        "finished_unix_ms": row.finished_ms,
        "end_to_end_ms": float(end_to_end) if isinstance(end_to_end, (int, float)) else None,
        "error": row.error,
        "errors": [dict(e) for e in row.errors[-3:]],
    }


@dataclass(frozen=True)
class _Finished:
    at: float  #: monotonic seconds
    state: str
    device_id: str
    end_to_end_ms: float | None


class FinishedWindow:
    """Tasks that ended in the last ``span_s`` seconds: throughput, latency, tasks per device.

    Times are arguments (monotonic seconds), so the figures are exact and testable. Until the
    window has been open ``span_s`` seconds, the figures cover the time it has been open.
    """

    def __init__(self, started: float, span_s: float = WINDOW_S) -> None:
        self.started = started
        self.span_s = span_s
        self._ended: deque[_Finished] = deque()

    def add(self, row: TaskRow, now: float) -> None:
        e2e = row.timings.get("end_to_end_ms") if row.state == TaskState.DONE.value else None
        if not isinstance(e2e, (int, float)) and row.state == TaskState.DONE.value:
            e2e = max(0, row.finished_ms - row.submitted_ms) if row.finished_ms else None
        value = float(e2e) if isinstance(e2e, (int, float)) else None
        self._ended.append(_Finished(now, row.state, row.device_id, value))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._ended and self._ended[0].at <= now - self.span_s:
            self._ended.popleft()

    def figures(self, now: float) -> dict[str, Any]:
        self._prune(now)
        span = min(self.span_s, max(now - self.started, 0.0))
        states = Counter(e.state for e in self._ended)
        done = [e for e in self._ended if e.state == TaskState.DONE.value]
        latencies = [e.end_to_end_ms for e in done if e.end_to_end_ms is not None]
        return {
            "seconds": round(span, 3),
            "done": len(done),
            "dead": states[TaskState.DEAD.value],
            "cancelled": states[TaskState.CANCELLED.value],
            # over at least a second: a task done just after start is not a burst of thousands
            "throughput_per_s": round(len(done) / max(span, 1.0), 3),
            "latency_p50_ms": round(percentile(latencies, 50), 3) if latencies else None,
            "latency_p95_ms": round(percentile(latencies, 95), 3) if latencies else None,
            "per_device": dict(Counter(e.device_id for e in done)),
        }


class LiveFeed:
    """What the dashboard's event stream sends: snapshots of the master, taken at most every
    ``CACHE_S`` seconds whatever the number of streams, and the window of finished tasks."""

    def __init__(self, master: Master | None) -> None:
        self.master = master
        self.window = FinishedWindow(time.monotonic())
        self.failed: deque[dict[str, Any]] = deque(maxlen=FAILURES)  #: ended after failures
        self.watchers = 0
        self._seq = 0
        self._cached: tuple[float, Snapshot] | None = None
        self._lock = asyncio.Lock()
        if master is not None:  # None: an app built only for its OpenAPI document
            master.hub.listen(self.record)  # every task the master announces as finished

    def record(self, row: TaskRow) -> None:
        self.window.add(row, time.monotonic())
        if row.errors and row.state != TaskState.DEAD.value:  # dead ones come from the journal
            self.failed.appendleft(brief(row))

    async def snapshot(self) -> Snapshot:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_S:
                return self._cached[1].model_copy(update={"watchers": self.watchers})
            snapshot = await self._take(now)
            self._cached = (now, snapshot)
            return snapshot

    async def _take(self, now: float) -> Snapshot:
        master = self.master
        assert master is not None
        core = master.core
        monotonic = master.clock.monotonic()
        devices = sorted(core.devices.values(), key=lambda d: d.id)
        states: Counter[str] = Counter(d.shown_state for d in devices)
        counts = await master.task_counts()
        # the journal's rows of unfinished tasks may be a commit behind the master's own
        recent = await master.list_tasks(None, RECENT)
        dead = await master.list_tasks(TaskState.DEAD.value, FAILURES)
        retrying = sorted(
            (r for r in master.rows.values() if r.errors),
            key=lambda r: r.updated_ms,
            reverse=True,
        )[:FAILURES]
        failures: dict[str, dict[str, Any]] = {}
        for item in [*map(brief, dead), *map(brief, retrying), *self.failed]:
            failures.setdefault(item["id"], item)
        self._seq += 1
        return Snapshot.model_validate(
            {
                "seq": self._seq,
                "time_unix_ms": master.clock.wall_ms(),
                "interval_s": INTERVAL_S,
                "devices": [device_json(d, monotonic) for d in devices],
                "device_states": dict(states),
                "tasks": counts,
                "queue_depth": core.queue_depth(),
                "retries": core.retries,
                "hedges": {
                    "started": core.hedges_started,
                    "won": core.hedges_won,
                    "lost": core.hedges_lost,
                    "wasted_s": round(core.hedge_wasted_ms / 1000, 3),
                },
                "finished_since_start": dict(master.finished_total),
                "window": self.window.figures(now),
                "recent": [brief(r) for r in recent],
                "failures": list(failures.values())[: FAILURES * 2],
                "watchers": self.watchers,
            }
        )

    def stopping(self) -> bool:
        return self.master is None or self.master.stopping

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Server-sent events: ``retry``, then an ``event: snapshot`` a second until the client
        disconnects or the master stops (then it returns, and the response ends)."""
        self.watchers += 1
        try:
            yield f"retry: {RETRY_MS}\n\n"
            loop = asyncio.get_running_loop()
            while not self.stopping() and not await request.is_disconnected():
                snapshot = await self.snapshot()
                data = snapshot.model_dump_json()
                yield f"id: {snapshot.seq}\nevent: snapshot\ndata: {data}\n\n"
                next_at = loop.time() + INTERVAL_S
                while (left := next_at - loop.time()) > 0:
                    if self.stopping():
                        return
                    await asyncio.sleep(min(POLL_S, left))
        finally:
            self.watchers -= 1


# ---- the routes ------------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return resources.files("edgesched.master").joinpath("static", name).read_bytes()


def dashboard_router(
    master: Master, reads: Guard, unauthorised: dict[int | str, dict[str, Any]]
) -> APIRouter:
    """The page, its two assets and the event stream. ``reads`` guards the stream as it guards
    every read route; the page and assets hold no data and are always open."""
    router = APIRouter()
    feed = LiveFeed(master)
    page, script, style = (_asset(n) for n in ("index.html", "dashboard.js", "dashboard.css"))

    @router.get("/", response_class=HTMLResponse, tags=["dashboard"])
    async def dashboard() -> HTMLResponse:
        """The dashboard: devices, throughput, latency, tasks; live from /api/v1/events."""
        headers = {**ASSET_HEADERS, "Content-Security-Policy": CSP}
        return HTMLResponse(page, headers=headers)

    @router.get("/static/dashboard.js", response_class=JavaScriptResponse, tags=["dashboard"])
    async def dashboard_js() -> JavaScriptResponse:
        return JavaScriptResponse(script, headers=ASSET_HEADERS)

    @router.get("/static/dashboard.css", response_class=CSSResponse, tags=["dashboard"])
    async def dashboard_css() -> CSSResponse:
        return CSSResponse(style, headers=ASSET_HEADERS)

    @router.get(
        "/api/v1/events",
        response_model=Snapshot,
        responses={
            200: {
                "description": "a snapshot; with `Accept: text/event-stream`, a stream of them",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **unauthorised,
        },
        dependencies=[Depends(reads)],
        tags=["dashboard"],
    )
    async def events(request: Request) -> Any:
        """The cluster as the dashboard shows it. Sent `Accept: text/event-stream`: server-sent
        events, an `event: snapshot` with this JSON a second, until the client disconnects or
        the master stops. Otherwise: one snapshot."""
        if "text/event-stream" not in request.headers.get("accept", ""):
            return await feed.snapshot()
        return StreamingResponse(
            feed.stream(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
