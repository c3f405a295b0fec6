"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

A master and three emulated boards (sleep backend) run as processes while tasks keep flowing.
The page must list every device (marked emulated), show a throughput above zero, refuse a drain
without the API token and say so on the page, drain a device with the token (the REST API
agrees, the page shows it), and show a task's stages. It must load nothing from anywhere but
the gateway. A screenshot is kept: ``$EDGESCHED_ARTEFACTS/dashboard.png``, else
``workspace/artefacts/dashboard.png`` (the path is printed).

Needs ``chromium`` (``make deps-system``) and ``playwright`` (the ``dev`` extra; never
``playwright install``: the test uses the system's browser). Skipped when either is missing,
except in CI (``CI=true``), where it fails instead: there it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest

from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc

PROFILES = ("atlas310", "orin", "rk3588")
AGENT_ARGS = ["--backend", "sleep", "--time-scale", "40"]  # ~0.2 s a task on the orin
SUBMIT_EVERY_S = 0.25  #: well under what three boards finish: the queue stays short
WAIT_MS = 20_000  #: the longest any condition on the page may take to become true
REPO = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def skip_or_fail(reason: str) -> None:
    """Skips, except in CI, where a skipped browser test would hide that it never ran."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the dashboard's browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """The system's Chromium (Debian's package), and Playwright to drive it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[dev]')")
    path = os.environ.get("EDGESCHED_CHROMIUM") or shutil.which("chromium")
    if not path:
        skip_or_fail("no chromium on PATH (make deps-system, or apt-get install chromium)")
    assert path is not None
    return path


@pytest.fixture
def artefacts() -> Path:
    directory = Path(os.environ.get("EDGESCHED_ARTEFACTS") or REPO / "workspace" / "artefacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Load:
    """Submits a task every ``period`` seconds from a thread until stopped, so that tasks keep
    finishing while the page is watched."""

    def __init__(self, cluster: LocalCluster, period: float = SUBMIT_EVERY_S) -> None:
        self.cluster = cluster
        self.period = period
        self.submitted = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-load", daemon=True)

    def _run(self) -> None:
        metadata = (("authorization", f"Bearer {self.cluster.api_token}"),)
        payload = png_bytes()
        with grpc.insecure_channel(self.cluster.grpc_target) as channel:
            stub = client_pb2_grpc.TaskServiceStub(channel)
            while not self._stop.is_set():
                request = client_pb2.SubmitRequest(
                    client_id="dashboard-test",
                    idempotency_key=f"page-{self.submitted}",
                    task_type="layout",
                    filename=f"page-{self.submitted}.png",
                    payload=payload,
                )
                try:
                    stub.Submit(request, timeout=10, metadata=metadata)
                    self.submitted += 1
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code()}: {exc.details()}")
                self._stop.wait(self.period)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the load thread did not stop"


def eventually(probe: Callable[[], T | None], what: str, limit_s: float = WAIT_MS / 1000) -> T:
    """Polls ``probe`` until it returns something true."""
    deadline = time.monotonic() + limit_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rest_device(cluster: LocalCluster, device_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cluster.http_url}/api/v1/devices", timeout=5)
    response.raise_for_status()
    (device,) = [d for d in response.json()["devices"] if d["id"] == device_id]
    return dict(device)


@pytest.fixture
def running(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, list[str]]]:
    """The cluster with its three boards online and tasks flowing (stopped at teardown)."""
    cluster.start_master()
    for profile in PROFILES:
        cluster.start_agent(f"agent-{profile}", ["--emulate", profile, *AGENT_ARGS])
    devices = sorted(d["id"] for d in cluster.wait_for_devices(len(PROFILES)))
    with Load(cluster) as load:
        yield cluster, devices
    assert load.submitted > 0 and not load.errors, load.errors[:3]


@pytest.mark.auth
def test_the_dashboard_shows_the_cluster_and_drains_a_device(
    chromium: str, artefacts: Path, running: tuple[LocalCluster, list[str]]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    cluster, devices = running
    expect.set_options(timeout=WAIT_MS)
    problems: list[str] = []
    origin = cluster.http_url

    def outside(url: str) -> None:
        if not (url.startswith(origin + "/") or url.startswith("data:")):
            problems.append(f"a request outside the gateway: {url}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("request", lambda request: outside(request.url))
            try:
                page.goto(f"{origin}/")
                expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")

                # every device, marked emulated
                rows = page.locator("#device-rows tr[data-device-id]")
                expect(rows).to_have_count(len(devices))
                for device_id in devices:
                    row = page.locator(f'#device-rows tr[data-device-id="{device_id}"]')
                    expect(row).to_be_visible()
                    expect(row.locator('[data-field="type"]')).to_contain_text("emulated")
                    expect(row).to_have_attribute("data-state", "online")

                # tasks are finishing: the throughput shown is above zero
                throughput = page.get_by_test_id("throughput")
                page.wait_for_function(
                    "Number(document.getElementById('throughput').dataset.value) > 0"
                )
                expect(throughput).to_have_text(re.compile(r"^\d+\.\d\d$"))
                expect(throughput).not_to_have_text("0.00")
                expect(page.get_by_test_id("latency-p50")).to_have_text(re.compile(r"^\d+$"))

                # without the API token a drain is refused, and the page says why
                target = devices[0]
                row = page.locator(f'#device-rows tr[data-device-id="{target}"]')
                message = page.get_by_test_id("message")
                row.locator('button[data-action="drain"]').click()
                expect(message).to_have_attribute("data-kind", "error")
                expect(message).to_contain_text("401")
                assert not rest_device(cluster, target)["draining"]

                # with it, the device drains: the REST API agrees and the page shows it
                page.get_by_test_id("api-token").fill(cluster.api_token)
                page.get_by_test_id("token-save").click()
                expect(page.get_by_test_id("token-state")).to_have_attribute("data-set", "true")
                stored = page.evaluate("sessionStorage.getItem('edgesched.apiToken')")
                assert stored == cluster.api_token
                row.locator('button[data-action="drain"]').click()
                expect(message).to_have_attribute("data-kind", "ok")
                expect(message).to_contain_text("draining")
                drained = eventually(
                    lambda: (d := rest_device(cluster, target))["draining"] and d,
                    f"{target} to be draining",
                )
                assert drained["state"] == "draining"
                expect(row).to_have_attribute("data-draining", "true")
                expect(row.get_by_test_id("device-state")).to_have_text("draining")
                expect(row.locator('button[data-action="undrain"]')).to_be_visible()
                for other in devices[1:]:
                    other_row = page.locator(f'#device-rows tr[data-device-id="{other}"]')
                    expect(other_row).to_have_attribute("data-draining", "false")

                # a finished task's stages, with their durations
                page.locator('#recent-rows tr[data-state="done"]').first.click()
                detail = page.get_by_test_id("task-detail")
                expect(detail).to_be_visible()
                expect(detail).to_have_attribute("data-state", "done")
                for stage in ("queued", "transferred", "inference", "returned", "delivered"):
                    duration = detail.locator(f'tr[data-stage="{stage}"] [data-field="duration"]')
                    expect(duration).to_have_text(re.compile(r"\d ms$|\d s$"))
                end_to_end = detail.locator('tr[data-stage="end_to_end"] [data-field="duration"]')
                expect(end_to_end).to_have_text(re.compile(r"\d"))
            except BaseException:
                failed = artefacts / "dashboard-failed.png"
                page.screenshot(path=str(failed), full_page=True)
                print(f"dashboard screenshot (at the failure): {failed}")
                raise
            shot = artefacts / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    # the browser logs the refused drain (401) as a failed load; nothing else may go wrong
    refused = "status of 401 (Unauthorized)"
    assert [p for p in problems if not p.endswith(refused)] == []
