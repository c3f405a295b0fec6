"""Independent peers written from the seed's wire facts alone (reference/seed-system.md §2.3,
§2.4, §2.9): a generic gRPC channel with identity serializers, bare http.server receivers of
both generations, and a seed-style task manager that saves uploads and POSTs /schedule.
None uses edgesched's own code."""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc


def upload_message(name: str, data: bytes, tasktype: str = "layout", **extra: Any) -> bytes:
    body = {"filename": name, "content_b64": base64.b64encode(data).decode(), "tasktype": tasktype}
    body.update(extra)
    return json.dumps(body).encode("utf-8")


def upload_image(target: str, body: bytes) -> dict[str, Any]:
    with grpc.insecure_channel(target) as channel:
        reply: bytes = channel.unary_unary("/ImageUpload/UploadImage")(body, timeout=30)
    result: dict[str, Any] = json.loads(reply)
    return result


def upload_images(target: str, bodies: list[bytes]) -> dict[str, Any]:
    with grpc.insecure_channel(target) as channel:
        reply: bytes = channel.stream_unary("/ImageUpload/UploadImages")(iter(bodies), timeout=60)
    result: dict[str, Any] = json.loads(reply)
    return result


class Receiver:
    """A bare result receiver: stores every multipart `file` part it is handed, and counts."""

    def __init__(self, directory: Path, fail_first: int = 0) -> None:
        self.directory = directory
        self.received: list[str] = []
        self.requests = 0
        self.fail_first = fail_first  #: answer 503 to this many requests first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                boundary = self.headers["Content-Type"].split("boundary=")[1].strip('"')
                for part in body.split(b"--" + boundary.encode()):
                    head, _, content = part.partition(b"\r\n\r\n")
                    match = re.search(rb'name="file"; filename="([^"]+)"', head)
                    if match:
                        name = match.group(1).decode()
                        (receiver.directory / name).write_bytes(content[: -len(b"\r\n")])
                        receiver.received.append(name)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"File received")

            def log_message(self, *args: Any) -> None:
                return None

        directory.mkdir(parents=True, exist_ok=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(field name, file name or "", content) of each part of a multipart/form-data body."""
    boundary = content_type.split("boundary=")[1].strip('"')
    parts = []
    for part in body.split(b"--" + boundary.encode())[1:]:
        head, _, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        filename = re.search(rb'filename="([^"]*)"', head)
        if name:
            parts.append(
                (
                    name.group(1).decode(),
                    filename.group(1).decode() if filename else "",
                    content[: -len(b"\r\n")],
                )
            )
    return parts


class LaterReceiver:
    """The later generation's rst_recv (§2.9, Gen-B): files each result under
    ``<dir>/<service or Unknown>/rst/<basename>``, the service from the form field ``service``
    (basename only, ``.``/``..`` refused), else its ``--tasktype`` (default empty)."""

    def __init__(self, directory: Path, tasktype: str = "") -> None:
        self.directory = directory
        self.saved: list[Path] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/recv_rst":
                    self.send_response(404)
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fields = multipart_parts(self.headers["Content-Type"], body)
                files = [(n, f, c) for n, f, c in fields if n == "file" and f]
                values = {n: c.decode() for n, f, c in fields if not f}
                service = Path(values["service"]).name if "service" in values else tasktype
                if not files or service in (".", ".."):
                    self.send_response(400)
                    self.end_headers()
                    return
                _, filename, content = files[0]
                folder = receiver.folder(service, values.get("req_id", ""))
                target = receiver.directory / folder / Path(filename).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                receiver.saved.append(target)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"File received")

            def log_message(self, *args: Any) -> None:
                return None

        directory.mkdir(parents=True, exist_ok=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def folder(self, service: str, req_id: str) -> Path:
        return Path(service or "Unknown") / "rst"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForkReceiver(LaterReceiver):
    """The fork's rst_recv (§12.3): ``<rst-path>/<req_id or service or Unknown>/<file>``."""

    def folder(self, service: str, req_id: str) -> Path:
        return Path(Path(req_id).name or service or "Unknown")


class SeedTaskManager:
    """The seed's task_manager.py as the gateway sees it (§2.3): each upload is saved as
    ``<upload>/<ip>/<ip>_<n><ext>``, the counter seeded at start from the largest ``n`` in the
    folder (so a restart after the folder was emptied numbers from 1 again), then announced by
    ``POST /schedule?stargety=<strategy>``; the gateway's answer is only recorded (the seed
    ignores it). ``generation`` "A" sends ``{ip, tasktype, filepath, filename}``, "B" adds a
    fresh ``req_id`` (``<ip>_<uuid hex>``) and ``total_num`` 1."""

    def __init__(
        self, upload_root: Path, gateway: str, generation: str = "A", strategy: str = "load"
    ) -> None:
        self.upload_root = upload_root
        self.gateway = gateway
        self.generation = generation
        self.strategy = strategy
        self.counters: dict[str, int] = {}
        self.answers: list[tuple[int, dict[str, Any]]] = []
        if upload_root.is_dir():
            for folder in upload_root.iterdir():
                pattern = re.compile(rf"^{re.escape(folder.name)}_(\d+)(\.[^.]*)?$")
                numbers = [
                    int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))
                ]
                self.counters[folder.name] = max(numbers, default=0)

    def upload(self, ip: str, filename: str, data: bytes, tasktype: str = "yolo") -> str:
        self.counters[ip] = self.counters.get(ip, 0) + 1
        name = f"{ip}_{self.counters[ip]}{Path(filename).suffix}"
        folder = self.upload_root / ip
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        body: dict[str, Any] = {
            "ip": ip,
            "tasktype": tasktype,
            "filepath": f"{ip}/",
            "filename": name,
        }
        if self.generation == "B":
            body.update(req_id=f"{ip}_{uuid.uuid4().hex}", total_num=1)
        self.answers.append(self.schedule(body))
        return name

    def schedule(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.gateway}/schedule?stargety={self.strategy}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def send_pic(
    host: str, port: int, directory: Path, limit: int | None, workers: int, tasktype: str = "yolo"
) -> list[dict[str, Any]]:
    """The seed's send_pic.py (§2.1, Gen-A sends "yolo"): the folder's files, numeric stems
    first in numeric order, one unary UploadImage each on a pool of ``workers`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(
        (p for p in directory.iterdir() if p.is_file()),
        key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem),
    )[:limit]
    target = f"{host}:{port}"
    with ThreadPoolExecutor(workers) as pool:
        return list(
            pool.map(
                lambda p: upload_image(target, upload_message(p.name, p.read_bytes(), tasktype)),
                files,
            )
        )
