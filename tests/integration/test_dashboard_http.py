"""The dashboard on a real gateway: the page and its assets, and the event stream behind it
(what a snapshot holds, that its window is exact, that a stream ends when its client leaves
and when the master stops)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from edgesched.journal.base import TaskRow
from edgesched.master.dashboard import FinishedWindow, Snapshot
from edgesched.stats import percentile
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes

STREAM = {"Accept": "text/event-stream"}
EXTERNAL = re.compile(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['\"]?(?!data:)", re.I)


def truncated_jpeg() -> bytes:
    """A JPEG cut in half: intake accepts its header, the agent cannot decode it (dead)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36).save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of a text/event-stream response: {"event", "data", "id", "retry"}."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        event[name] = event[name] + "\n" + value if name == "data" and name in event else value


async def snapshots(response: httpx.Response) -> AsyncIterator[Snapshot]:
    async for event in events(response):
        if event.get("event") == "snapshot":
            yield Snapshot.model_validate_json(event["data"])


async def next_snapshot(stream: AsyncIterator[Snapshot], limit_s: float = 5) -> Snapshot:
    return await asyncio.wait_for(anext(stream), limit_s)


async def until_watchers(stream: AsyncIterator[Snapshot], count: int) -> None:
    async for snapshot in stream:
        if snapshot.watchers == count:
            return


# ---- the page and its assets -----------------------------------------------------------------


async def test_page_and_assets_are_served_with_their_types_and_nothing_external(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    page = await cluster.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "script-src 'self'" in csp and "unsafe" not in csp
    # everything the page loads is relative to the gateway, or inline data
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page.text)
    assert set(refs) == {"data:,", "static/dashboard.css", "static/dashboard.js"}
    types = {"/static/dashboard.js": "text/javascript", "/static/dashboard.css": "text/css"}
    bodies = {"/": page.text}
    for path, media_type in types.items():
        response = await cluster.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == media_type
        assert response.headers["x-content-type-options"] == "nosniff"
        bodies[path] = response.text
    for path, text in bodies.items():
        assert EXTERNAL.search(text) is None, (path, EXTERNAL.search(text))
    # the elements the browser test and the script rely on are there
    for anchor in ('id="throughput"', 'id="device-rows"', 'id="api-token"', 'id="task-detail"'):
        assert anchor in page.text
    for anchor in ("api/v1/events", "text/event-stream", "sessionStorage", "Authorization"):
        assert anchor in bodies["/static/dashboard.js"]


async def test_the_page_is_open_and_the_feed_guarded_when_reads_need_the_token(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.master.settings.master.auth_read = "on"
    assert (await cluster.get("/")).status_code == 200
    assert (await cluster.get("/static/dashboard.js")).status_code == 200
    refused = await cluster.get("/api/v1/events")
    assert refused.status_code == 401 and "API token" in refused.json()["msg"]
    token = {"Authorization": f"Bearer {cluster.master.api_token.current()}", **STREAM}
    async with (
        httpx.AsyncClient(base_url=cluster.http, timeout=10) as client,
        client.stream("GET", "/api/v1/events", headers=STREAM) as no_token,
    ):
        assert no_token.status_code == 401
        async with client.stream("GET", "/api/v1/events", headers=token) as response:
            assert response.status_code == 200
            assert (await next_snapshot(snapshots(response))).devices == []


# ---- the event stream --------------------------------------------------------------------------


async def test_the_stream_sends_snapshots_of_devices_tasks_and_an_exact_window(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster(retry_backoff_s=0.01, heartbeat_interval_s=0.2)
    agent = await cluster.add_agent("a1", emulate="orin", time_scale=5.0)
    agent_id = agent.identity.agent_id
    done = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(5)]
    dead = (await cluster.submit("bad", truncated_jpeg())).task_id
    results = await cluster.wait([*done, dead])
    await cluster.master.journal.flush()
    timings = [(await cluster.get(f"/api/v1/tasks/{t}")).json()["timings"] for t in done]
    latencies = [float(t["end_to_end_ms"]) for t in timings]

    async with (
        httpx.AsyncClient(base_url=cluster.http, timeout=10) as client,
        client.stream("GET", "/api/v1/events", headers=STREAM) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = events(response)
        assert await anext(stream) == {"retry": "2000"}
        first = await anext(stream)
        assert first["event"] == "snapshot" and int(first["id"]) >= 1
        snapshot = Snapshot.model_validate_json(first["data"])
        second = await asyncio.wait_for(anext(stream), 5)  # a second later, a newer one
        assert int(second["id"]) > int(first["id"])

    (device,) = snapshot.devices
    assert device["id"] == agent_id and device["type"] == "orin" and device["emulated"]
    assert device["tasks_done"] == 5 and device["state"] == "online"
    assert snapshot.device_states == {"online": 1}
    assert snapshot.tasks == {"done": 5, "dead": 1}
    assert snapshot.finished_since_start == {"done": 5, "dead": 1}
    assert snapshot.queue_depth == 0 and snapshot.watchers == 1
    window = snapshot.window
    assert (window.done, window.dead, window.cancelled) == (5, 1, 0)
    assert window.per_device == {agent_id: 5}
    assert 0 < window.seconds <= 10
    assert window.throughput_per_s == pytest.approx(5 / max(window.seconds, 1.0), rel=1e-2)
    assert window.latency_p50_ms == round(percentile(latencies, 50), 3)
    assert window.latency_p95_ms == round(percentile(latencies, 95), 3)
    assert window.latency_p50_ms is not None and window.latency_p95_ms is not None
    assert window.latency_p50_ms <= window.latency_p95_ms <= max(latencies)
    assert {t.id for t in snapshot.recent} == {*done, dead}
    (failure,) = snapshot.failures
    assert failure.id == dead and failure.state == "dead"
    assert failure.error and failure.error == results[dead].error
    assert failure.errors and failure.errors[-1].device_id == agent_id


async def test_without_the_event_stream_accept_header_it_answers_one_snapshot(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    response = await cluster.get("/api/v1/events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    snapshot = Snapshot.model_validate(response.json())
    assert snapshot.watchers == 0 and snapshot.window.done == 0
    assert snapshot.window.throughput_per_s == 0 and snapshot.window.latency_p50_ms is None


async def test_a_stream_ends_when_its_client_disconnects(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    async with (
        httpx.AsyncClient(base_url=cluster.http, timeout=10) as client,
        client.stream("GET", "/api/v1/events", headers=STREAM) as watched,
    ):
        stream = snapshots(watched)
        assert (await next_snapshot(stream)).watchers == 1
        async with client.stream("GET", "/api/v1/events", headers=STREAM) as other:
            other_stream = snapshots(other)  # kept: a dropped iterator closes the response
            assert (await next_snapshot(other_stream)).watchers == 2
            await asyncio.wait_for(until_watchers(stream, 2), 5)
        # the other client is gone: its generator ended, and the count says so
        await asyncio.wait_for(until_watchers(stream, 1), 5)
    # and so did the first one's
    deadline = time.monotonic() + 5
    while (await cluster.get("/api/v1/events")).json()["watchers"] != 0:
        assert time.monotonic() < deadline, "a stream outlived its client"
        await asyncio.sleep(0.1)


async def test_a_stream_ends_when_the_master_stops_and_does_not_hold_up_shutdown(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    server = cluster.server
    assert server is not None
    async with (
        httpx.AsyncClient(base_url=cluster.http, timeout=10) as client,
        client.stream("GET", "/api/v1/events", headers=STREAM) as response,
    ):
        stream = snapshots(response)
        await next_snapshot(stream)

        async def rest() -> int:
            return len([snapshot async for snapshot in stream])

        reader = asyncio.create_task(rest())
        started = time.monotonic()
        await server.stop()
        took = time.monotonic() - started
        cluster.server = None  # stopped here, not again at teardown
        await asyncio.wait_for(reader, 5)  # the stream ended: the response is complete
    # the HTTP server waits up to 5 s for open responses: a stream that ignored the stop
    # would make it wait that long
    assert took < 2.5, f"stopping took {took:.1f} s with a stream open"


# ---- the window --------------------------------------------------------------------------------


def finished(task_id: str, state: str, device: str, e2e: float | None, at_ms: int) -> TaskRow:
    row = TaskRow(
        id=task_id,
        client_id="c",
        idem_key=task_id,
        task_type="layout",
        filename="a.png",
        payload_path="",
        payload_size=1,
        submitted_ms=at_ms - 500,
        state=state,
        device_id=device,
        finished_ms=at_ms,
    )
    if e2e is not None:
        row.timings = {"end_to_end_ms": e2e}
    return row


def test_the_window_covers_the_last_span_and_no_more() -> None:
    window = FinishedWindow(started=100.0, span_s=10.0)
    assert window.figures(100.0)["throughput_per_s"] == 0
    window.add(finished("a", "done", "d1", 100.0, 0), now=101.0)
    window.add(finished("b", "done", "d2", 300.0, 0), now=102.0)
    window.add(finished("c", "dead", "d1", None, 0), now=103.0)
    window.add(finished("d", "done", "d1", None, 1000), now=104.0)  # no timings: 500 ms
    window.add(finished("e", "cancelled", "", None, 0), now=105.0)
    figures = window.figures(105.0)
    assert figures["seconds"] == 5.0
    assert (figures["done"], figures["dead"], figures["cancelled"]) == (3, 1, 1)
    assert figures["throughput_per_s"] == pytest.approx(3 / 5)
    assert figures["per_device"] == {"d1": 2, "d2": 1}
    assert figures["latency_p50_ms"] == 300.0
    assert figures["latency_p95_ms"] == round(percentile([100.0, 300.0, 500.0], 95), 3)
    # ten seconds on, the first two are out of the window
    figures = window.figures(112.5)
    assert figures["seconds"] == 10.0
    assert (figures["done"], figures["dead"], figures["cancelled"]) == (1, 1, 1)
    assert figures["throughput_per_s"] == pytest.approx(0.1)
    assert figures["per_device"] == {"d1": 1}
    assert figures["latency_p50_ms"] == figures["latency_p95_ms"] == 500.0
    figures = window.figures(200.0)
    assert figures["done"] == 0 and figures["latency_p50_ms"] is None
    assert figures["per_device"] == {}


def test_a_task_done_just_after_start_is_not_a_burst() -> None:
    window = FinishedWindow(started=0.0, span_s=10.0)
    window.add(finished("a", "done", "d1", 10.0, 0), now=0.01)
    assert window.figures(0.02)["throughput_per_s"] == 1.0  # over a second at least


def test_the_snapshot_schema_is_what_the_stream_sends() -> None:
    # the OpenAPI document declares the JSON answer with this model; the stream sends the same
    schema = Snapshot.model_json_schema()
    assert {"devices", "window", "recent", "failures", "watchers", "hedges"} <= set(
        schema["properties"]
    )
    hedges = schema["$defs"]["HedgesOut"]["properties"]
    assert set(hedges) == {"started", "won", "lost", "wasted_s"}
    json.dumps(schema)
