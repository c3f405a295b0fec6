"""Independent peers written from the seed's wire facts alone (reference/seed-system.md §2.3,
§2.9): a generic gRPC channel with identity serializers, and a bare http.server receiver.
Neither uses edgesched's own client code."""

from __future__ import annotations

import base64
import json
import re
import threading
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
