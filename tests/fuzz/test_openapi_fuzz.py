"""Schemathesis against the gateway's own OpenAPI document, on a real master.

One master (real gRPC and HTTP on port 0, SQLite in a temp dir) with one sleep agent serves the
whole module; it holds a task in every state, so the routes that take a task id answer 200, 404
and 409 with real ids. Every operation of the document is fuzzed, positive and negative, and
every answer must be a declared status with a declared content type and a body that fits its
declared schema; a 5xx fails whatever was declared.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from edgesched.config import TaskTypeSettings
from edgesched.master.compat.intake import upload_root
from edgesched.master.http import make_http_app
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pictures import png_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES = 25  #: per operation and generation mode
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
#: statuses each operation's examples must have produced (200 for the others)
REACHED = {
    ("GET", "/api/v1/tasks"): {200, 422},
    ("GET", "/api/v1/tasks/{task_id}"): {200, 404},
    ("POST", "/api/v1/tasks/{task_id}/cancel"): {200, 401, 404, 409},
    ("POST", "/api/v1/tasks/{task_id}/retry"): {200, 401, 404, 409},
    ("POST", "/schedule"): {202, 400},
    ("POST", "/api/v1/seed/upload"): {200, 400, 401},
    ("POST", "/api/v1/devices/{device_id}/drain"): {200, 401, 404},
    ("POST", "/api/v1/devices/{device_id}/undrain"): {200, 401, 404},
}
#: routes FastAPI adds to serve the document itself
DOCUMENT_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def operations_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )


#: The document of an app that serves nothing (no master behind it): for parametrizing only;
#: the test checks it is the live master's document too.
OPERATIONS = operations_of(make_http_app(cast(Any, None), 0).openapi())


def truncated_jpeg() -> bytes:
    """A JPEG cut in half: intake accepts its header, the agent fails to decode it (dead)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36).save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


@dataclass
class Gateway:
    cluster: InProcessCluster
    document: dict[str, Any]
    schema: Any
    #: a real task id in each state, a seed upload's and an unknown one
    ids: dict[str, str] = field(default_factory=dict)
    #: a picture in the seed's upload folder that /schedule can name
    schedule_file: str = ""

    @property
    def app(self) -> Any:
        server = self.cluster.server
        assert server is not None and server.http_server is not None
        return server.http_server.config.app


async def submitted(cluster: InProcessCluster, key: str, payload: bytes, task_type: str) -> str:
    reply = await cluster.submit(key, payload, task_type=task_type)
    return reply.task_id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    settings_ = master_settings(tmp)
    # a second task type that no agent serves: its tasks stay queued (a waiting note, and
    # something left to cancel), and the seed's default task type resolves
    settings_.tasktypes = {
        "layout": TaskTypeSettings(),
        "yolo": TaskTypeSettings(kind="yolov8", model=str(tmp / "absent.onnx")),
    }
    cluster = InProcessCluster(tmp, settings_)
    try:
        await cluster.start()
        await cluster.add_agent("a1")
        ids = {
            "done": await submitted(cluster, "done", png_bytes(), "layout"),
            "dead": await submitted(cluster, "dead", truncated_jpeg(), "layout"),
            "queued": await submitted(cluster, "queued", png_bytes(), "yolo"),
            "cancelled": await submitted(cluster, "cancelled", png_bytes(), "yolo"),
        }
        await cluster.wait([ids["done"], ids["dead"]])
        await cluster.master.cancel(ids["cancelled"])
        headers = {"Authorization": f"Bearer {cluster.master.api_token.current()}"}
        async with httpx.AsyncClient(base_url=cluster.http, timeout=10, headers=headers) as client:
            upload = await client.post(
                "/api/v1/seed/upload",
                json={
                    "client_ip": "127.0.0.1",
                    "filename": "page.png",
                    "content_b64": base64.b64encode(png_bytes()).decode(),
                },
            )
            assert upload.status_code == 200, upload.text
            document = (await client.get("/openapi.json")).json()
            states = {
                name: (await client.get(f"/api/v1/tasks/{task_id}")).json()["state"]
                for name, task_id in ids.items()
            }
            # the fuzzing only means something if the real ids are what they stand for
            assert states == {name: name for name in ids}, states
        ids["seed"] = upload.json()["task_id"]
        ids["unknown"] = "no-such-task"
        # a picture a seed task manager left for /schedule, belonging to no task yet (the seed
        # upload's own file goes when the fuzzing cancels its task)
        scheduled = upload_root(cluster.master) / "127.0.0.1" / "for-schedule.png"
        scheduled.write_bytes(png_bytes())
        schema = schemathesis.openapi.from_dict(document)
        yield Gateway(cluster, document, schema, ids, scheduled.name)
    finally:
        await cluster.close()


#: bodies that are not the JSON an operation takes, sent as application/json: not JSON, not
#: an object, numbers JSON has no name for, nesting deeper than Python parses, and strings that
#: JSON can spell and UTF-8 cannot carry ("\\ud800") in the fields the routes name
MALFORMED_BODIES = [
    b"\xff]",
    b"{",
    b"",
    b"[]",
    b"null",
    b'{"a": NaN}',
    b'{"total_num": Infinity}',
    b"[" * 100_000,
    json.dumps({"ip": "\ud800", "tasktype": "\ud800", "filename": "\ud800"}).encode(),
    json.dumps(
        {
            "client_ip": "\ud800",
            "content_b64": base64.b64encode(png_bytes()).decode(),
            "tasktype": "\ud800",
            "filename": "\ud800.png",
            "req_id": "\ud800",
        }
    ).encode(),
]


def strategies_for(gateway: Gateway, method: str, path: str) -> dict[str, st.SearchStrategy[Any]]:
    """Positive and negative cases of one operation, and cases naming real tasks and files."""
    operation = gateway.schema[path][method]
    real = []
    if "{task_id}" in path:
        real += [
            operation.as_strategy(path_parameters={"task_id": task_id})
            for task_id in gateway.ids.values()
        ]
    if "{device_id}" in path:  # the real agent, and one that does not exist
        real += [
            operation.as_strategy(path_parameters={"device_id": device_id})
            for device_id in (*gateway.cluster.master.core.devices, "no-such-device")
        ]
    if path == "/schedule":  # names a picture that is there: 202
        body = {"ip": "127.0.0.1", "tasktype": "yolo", "filename": gateway.schedule_file}
        real.append(operation.as_strategy(body=body, query={"stargety": "load"}))
    if path == "/api/v1/seed/upload":  # a real picture: 200
        body = {"client_ip": "10.0.0.9", "content_b64": base64.b64encode(png_bytes()).decode()}
        real.append(operation.as_strategy(body=body))
    if "requestBody" in gateway.document["paths"][path][method.lower()]:
        real += [
            st.builds(operation.Case, body=st.just(raw), media_type=st.just("application/json"))
            for raw in MALFORMED_BODIES
        ]
    modes = {
        "positive": operation.as_strategy(GenerationMode.POSITIVE),
        "negative": operation.as_strategy(GenerationMode.NEGATIVE),
    }
    if real:
        modes["real"] = st.one_of(real)
    return modes


def fuzz(gateway: Gateway, method: str, path: str) -> tuple[list[str], set[int]]:
    """Runs the operation's examples (in a worker thread: the master's loop keeps serving);
    returns the failing examples' reports, one per kind of case, and the statuses answered."""
    failures: list[str] = []
    answered: set[int] = set()
    base_url = gateway.cluster.http
    # a connection per request: on a kept-alive one each answer of uvicorn (h11) waits for a
    # delayed ACK, 40 ms on Linux loopback
    fresh = {"Connection": "close"}
    token = {**fresh, "Authorization": f"Bearer {gateway.cluster.master.api_token.current()}"}
    with requests.Session() as session:
        for mode, cases in strategies_for(gateway, method, path).items():
            found: list[str] = []

            @FUZZ
            @given(case=cases, authorised=st.sampled_from([True] * 3 + [False]))
            def check(case: Any, authorised: bool) -> None:
                try:
                    response = case.call_and_validate(
                        base_url=base_url,
                        session=session,
                        headers=token if authorised else fresh,
                        checks=CHECKS,
                        timeout=10,
                    )
                except (Exception, BaseExceptionGroup) as exc:  # FailureGroup: every check failed
                    found.append(f"[{mode} cases]\n{exc}")  # noqa: B023 (run at once)
                    raise
                answered.add(response.status_code)

            try:
                check()
            except Unsatisfiable:
                # an operation with nothing to get wrong (no parameters, no body) has no
                # negative cases
                if mode != "negative":
                    raise
            except (Exception, BaseExceptionGroup) as exc:
                # the last example reported is the shrunk one; anything else is an error of
                # the test itself, reported as such
                failures.append(found[-1] if found else f"[{mode} cases] {exc!r}")
    return failures, answered


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_every_answer_of_the_operation_is_declared_in_the_document(
    gateway: Gateway, method: str, path: str
) -> None:
    assert (method, path) in operations_of(gateway.document)
    failures, answered = await asyncio.to_thread(fuzz, gateway, method, path)
    assert not failures, f"{method} {path}:\n" + "\n".join(failures)
    # the examples reached the answers that matter, not only the refusals
    assert REACHED.get((method, path), {200}) <= answered, answered


def routes_of(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, those of included routers too."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's included router
            context = route.include_context
            found |= routes_of(route.original_router.routes, prefix + context.prefix)
        elif isinstance(getattr(route, "path", None), str):
            for method in getattr(route, "methods", None) or {"GET"}:
                if method != "HEAD":
                    found.add((method, prefix + route.path))
    return found


async def test_every_route_of_the_gateway_is_in_its_openapi_document(gateway: Gateway) -> None:
    routes = {(m, p) for m, p in routes_of(gateway.app.routes) if p not in DOCUMENT_ROUTES}
    documented = set(operations_of(gateway.document))
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations that no route serves"
    readme_routes = {
        ("GET", "/healthz"),
        ("GET", "/api/v1/devices"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/{task_id}"),
        ("POST", "/api/v1/tasks/{task_id}/cancel"),
        ("POST", "/api/v1/tasks/{task_id}/retry"),
        ("GET", "/api/v1/link"),
        ("POST", "/schedule"),
        ("GET", "/nodes"),
        ("POST", "/api/v1/seed/upload"),
    }
    assert readme_routes <= documented


async def test_every_operation_declares_a_response_model(gateway: Gateway) -> None:
    """A catch-all answer is not a declaration: each status has a JSON schema."""
    missing = [
        f"{method.upper()} {path} {status}"
        for path, item in gateway.document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status == "default"
        or not any(body.get("schema") for body in response.get("content", {}).values())
    ]
    assert missing == []
