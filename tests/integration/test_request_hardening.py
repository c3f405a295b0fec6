"""Issue 14, part B: request fields are data (never addresses or paths), fair result pushes,
body limits on every HTTP route, read routes behind the token beyond loopback, the in-flight
limit. Loopback IP literals only: no test here gives the master a name it could resolve."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from edgesched.errors import BadInputError
from edgesched.master.compat.intake import canonical_ip, ip_folder
from edgesched.master.compat.pusher import receiver_url
from edgesched.master.submission import Submission
from edgesched.tools.testing.pictures import png_bytes
from tests.seedpeers import Receiver, upload_message


async def post_schedule(cluster, body: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{cluster.http}/schedule", json=body, timeout=10)


def upload_file(cluster, folder: str, name: str, data: bytes) -> Path:
    path = Path(cluster.settings.master.data_dir) / "upload" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def wait_for(condition, limit_s: float = 30.0) -> bool:
    for _ in range(int(limit_s / 0.05)):
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


# ---- finding 2: the seed `ip` is an IP literal, one spelling, never resolved -----------------

ALIASES = [
    "127.0.0.1/",
    "127.0.0.1#",
    "127.0.0.1/../..",
    "127.0.0.1/../127.0.0.1",
    ".",
    "..",
    "127.0.0.1:",
    "127.0.0.1:80",
    "127.0.0.1\n",
    "127.0.0.1\x00",
    " 127.0.0.1",
    "127.0.0.01",
    "localhost",
    "fe80::1%lo",
    "fe80::1%/..",
]


@pytest.mark.parametrize("ip", ALIASES)
async def test_schedule_refuses_an_ip_that_is_not_an_ip_literal(make_cluster, ip: str) -> None:
    cluster = await make_cluster()
    victim = upload_file(cluster, "127.0.0.1", "127.0.0.1_1.png", png_bytes())
    body = {"ip": ip, "tasktype": "layout", "filename": "127.0.0.1_1.png"}
    response = await post_schedule(cluster, body)
    assert response.status_code == 400, response.text
    assert "invalid ip" in response.json()["msg"]
    assert "IPv4 or IPv6" in response.json()["msg"] or "zone" in response.json()["msg"]
    assert await cluster.master.journal.counts() == {}
    assert victim.read_bytes() == png_bytes()  # another client's upload stays untouched


async def test_an_upload_folder_is_reached_by_one_spelling_only(make_cluster) -> None:
    cluster = await make_cluster()
    upload_file(cluster, "127.0.0.1", "127.0.0.1_1.png", png_bytes())
    # IPv4 mapped into IPv6 is the IPv4 address: the same folder, the same client
    body = {"ip": "::ffff:127.0.0.1", "tasktype": "layout", "filename": "127.0.0.1_1.png"}
    response = await post_schedule(cluster, body)
    assert response.status_code == 202, response.text
    (row,) = await cluster.master.journal.list_tasks(None, 5)
    assert row.client_addr == "127.0.0.1" and row.client_id == "127.0.0.1"


def test_canonical_addresses_and_their_folders_are_one_to_one() -> None:
    assert canonical_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical_ip("0:0:0:0:0:0:0:1") == "::1"
    assert canonical_ip("FE80::1") == "fe80::1"
    # "::1" and "1::" must not share a folder (stripping separators made both "1")
    folders = {ip_folder(canonical_ip(a)) for a in ("::1", "1::", "::1:0", "1::1", "127.0.0.1")}
    assert len(folders) == 5
    assert all("/" not in f and f not in (".", "..") for f in folders)
    assert receiver_url("::1", 8888) == "http://[::1]:8888/recv_rst"
    assert receiver_url("127.0.0.1", 8888) == "http://127.0.0.1:8888/recv_rst"
    for bad in ("127.0.0.1:", "..", "127.0.0.1/", "host.invalid"):
        with pytest.raises(BadInputError):
            receiver_url(bad, 8888)


async def test_the_forwarded_upload_route_refuses_a_client_ip_that_is_not_an_ip(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    token = cluster.master.api_token.current()
    body = {
        "client_ip": "127.0.0.1/..",
        "filename": "a.png",
        "content_b64": base64.b64encode(png_bytes()).decode(),
        "tasktype": "layout",
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{cluster.http}/api/v1/seed/upload",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    assert response.status_code == 400 and "invalid ip" in response.json()["msg"]
    assert await cluster.master.journal.counts() == {}


async def test_a_push_to_an_address_that_is_not_an_ip_ends_undeliverable_with_the_reason(
    make_cluster,
) -> None:
    """A journal written before this check may hold such an address: its push must end
    marked, not die inside the pusher and stay pending forever."""
    cluster = await make_cluster()
    await cluster.add_agent("a1")
    row, _ = await cluster.master.submit(
        Submission(
            client_id="old",
            idem_key="old-1",
            task_type="layout",
            filename="a.png",
            payload=png_bytes(),
            origin="seed",
            client_addr="127.0.0.1:",
        )
    )

    async def marked() -> bool:
        await cluster.master.journal.flush()
        stored = await cluster.master.journal.get(row.id)
        return stored is not None and stored.delivery not in ("", "pending")

    assert await wait_for(marked)
    task = (await cluster.get(f"/api/v1/tasks/{row.id}")).json()
    assert task["state"] == "done" and task["delivery"] == "undeliverable"
    (error,) = [e for e in task["errors"] if e["kind"] == "undeliverable"]
    assert "invalid ip" in error["message"] and error["counted"] is False


# ---- finding 5: one silent receiver does not delay another client's results -----------------


class SilentReceiver:
    """Accepts connections on 127.0.0.2:<port> and never answers (nor closes them)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.2", port))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@contextlib.contextmanager
def receivers(tmp_path: Path) -> Iterator[tuple[Receiver, SilentReceiver]]:
    """A good receiver on 127.0.0.1 and a silent one on 127.0.0.2, on the same port (the
    result port is one setting for every client)."""
    for attempt in range(20):
        good = Receiver(tmp_path / f"rst{attempt}")
        try:
            silent = SilentReceiver(good.port)
        except OSError as exc:
            good.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        try:
            yield good, silent
        finally:
            silent.close()
            good.close()
        return
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


async def test_a_silent_receiver_does_not_delay_another_clients_results(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    with receivers(tmp_path) as (good, silent):
        cluster.settings.master.result_port = good.port
        await cluster.add_agent("a1", slots=8)
        names = [f"127.0.0.2_{i}.png" for i in range(80)]
        for i, name in enumerate(names):
            upload_file(cluster, "127.0.0.2", name, png_bytes(color=(i, 2, 2)))
        body = {"ip": "127.0.0.2", "tasktype": "layout", "filenames": names, "req_id": "silent"}
        assert (await post_schedule(cluster, body)).status_code == 202

        async def silent_done() -> bool:
            counts: dict[str, int] = await cluster.master.journal.counts()
            return counts.get("done", 0) == len(names)

        assert await wait_for(silent_done, 60)
        assert await wait_for(lambda: _true(bool(silent.held)))
        # another client's results, behind 80 pushes to a receiver that never answers
        async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
            upload = channel.unary_unary("/ImageUpload/UploadImage")
            for i in range(5):
                await upload(upload_message(f"{i}.png", png_bytes(color=(i, 9, 9))), timeout=10)
        # generous: delivered at once when pushes are fair, not before the silent receiver's
        # pushes time out in waves (10 s each, 80 of them) when they are not
        assert await wait_for(lambda: _true(len(good.received) == 5), 25), good.received
        assert sorted(good.received) == [f"127.0.0.1_{i}.txt" for i in range(1, 6)]
        # nothing is kept for a receiver once its pushes are over
        pusher = cluster.server.pusher
        assert await wait_for(
            lambda: _true(not any("127.0.0.1" in url for url in pusher._per_destination))
        )
        # the silent receiver holds at most its own share of connections
        assert len(silent.held) <= cluster.settings.master.result_push_per_destination * 2


async def _true(value: bool) -> bool:
    return value


# ---- finding 9: body limits on every HTTP route ------------------------------------------------


async def test_a_body_over_the_limit_is_refused_413_before_it_is_read(make_cluster) -> None:
    cluster = await make_cluster()
    limit = cluster.settings.master.max_request_bytes
    async with httpx.AsyncClient() as client:
        declared = await client.post(
            f"{cluster.http}/schedule", content=b"{" + b" " * (limit + 10) + b"}", timeout=30
        )
        assert declared.status_code == 413
        assert "over the limit" in declared.json()["msg"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(64):
                yield b" " * 65536

        streamed = await client.post(f"{cluster.http}/schedule", content=chunks(), timeout=30)
        assert streamed.status_code == 413 and "over the limit" in streamed.json()["msg"]
        # every route, not only /schedule
        other = await client.post(
            f"{cluster.http}/api/v1/tasks/x/cancel", content=b"x" * (limit + 1), timeout=30
        )
        assert other.status_code == 413
        small = await client.post(f"{cluster.http}/schedule", content=b"{}", timeout=10)
        assert small.status_code == 400  # under the limit: the route answers as before
    assert await cluster.master.journal.counts() == {}


async def test_the_forwarded_upload_route_takes_uploads_up_to_the_upload_limit(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    cluster.settings.master.max_request_bytes = 4096  # far smaller than a picture
    token = cluster.master.api_token.current()
    headers = {"Authorization": f"Bearer {token}"}
    picture = png_bytes(200, 200, (3, 4, 5))
    body = {
        "client_ip": "127.0.0.1",
        "filename": "a.png",
        "content_b64": base64.b64encode(picture).decode(),
        "tasktype": "layout",
    }
    async with httpx.AsyncClient() as client:
        url = f"{cluster.http}/api/v1/seed/upload"
        ok = await client.post(url, json=body, headers=headers, timeout=10)
        assert ok.status_code == 200, ok.text
        assert not Path(ok.json()["saved_path"]).is_absolute()
        cluster.settings.master.max_upload_bytes = 1024
        limit = 1024 * 4 // 3 + 1024 * 1024
        huge = {**body, "content_b64": "A" * (limit + 4)}
        refused = await client.post(url, json=huge, headers=headers, timeout=30)
        assert refused.status_code == 413


# ---- finding 10: reads beyond loopback, the in-flight limit, replies -------------------------


async def test_reads_need_the_token_when_the_master_listens_beyond_loopback(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    m = cluster.settings.master
    token = {"Authorization": f"Bearer {cluster.master.api_token.current()}"}
    reads = ["/api/v1/tasks", "/api/v1/devices", "/api/v1/summary", "/metrics", "/nodes"]
    async with httpx.AsyncClient(base_url=cluster.http, timeout=10) as client:
        for path in reads:  # loopback only (the test's master): open, as before
            assert (await client.get(path)).status_code == 200, path
        m.bind = "0.0.0.0"  # what the master decides from: where it listens
        for path in [*reads, "/api/v1/tasks/export.csv"]:
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers=token)).status_code == 200, path
        for path in ("/healthz", "/api/v1/link"):  # probes and agents' discovery stay open
            assert (await client.get(path)).status_code == 200, path
        m.auth_read = "off"  # an operator's explicit choice
        assert (await client.get("/api/v1/tasks")).status_code == 200
        m.bind, m.auth_read = "127.0.0.1", "on"
        assert (await client.get("/api/v1/tasks")).status_code == 401


async def test_the_in_flight_limit_holds_for_submissions_that_arrive_together(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    cluster.settings.master.max_inflight_per_client = 3

    async def one(i: int) -> str:
        try:
            await cluster.submit(f"k{i}", png_bytes(color=(i, 1, 1)))
        except grpc.aio.AioRpcError as exc:
            return exc.details() or ""
        return "ok"

    outcomes = await asyncio.gather(*(one(i) for i in range(10)))
    assert outcomes.count("ok") == 3, outcomes
    refusal = next(o for o in outcomes if o != "ok")
    assert "has 3 tasks in flight, the limit is 3" in refusal
    assert cluster.master.inflight["test"] == 3
    assert sum((await cluster.master.journal.counts()).values()) == 3


async def test_image_upload_replies_name_no_absolute_server_path(make_cluster) -> None:
    cluster = await make_cluster()
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        raw = await channel.unary_unary("/ImageUpload/UploadImage")(
            upload_message("a.png", png_bytes()), timeout=10
        )
    reply = json.loads(raw)
    assert reply == {"filename": "127.0.0.1_1.png", "saved_path": "127.0.0.1/127.0.0.1_1.png"}
    assert cluster.settings.master.data_dir not in raw.decode()
