"""``edgesched client recv``: the seed's result receiver (``POST /recv_rst``), threaded.

Saves the multipart ``file`` part as ``<dir>/<basename>``, overwriting (pushes are at least
once, so the same result may come twice). Names that are ``.``, ``..`` or contain a path
separator or NUL are refused with 400.
"""

from __future__ import annotations

import datetime
import os
import threading
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

MAX_BODY = 256 * 1024 * 1024


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart body: name → (filename or None, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields.setdefault(name, (part.get_filename(), data))
    return fields


def acceptable_name(name: str | None) -> bool:
    if not name or name in (".", ".."):
        return False
    return not any(c in name for c in "/\\\0")


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer

    def _reply(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(404, "404 Not Found")

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/recv_rst":
            self._reply(404, "404 Not Found")
            return
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            self._reply(400, "expected multipart/form-data")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reply(400, "missing or too large Content-Length")
            return
        fields = parse_multipart(content_type, self.rfile.read(length))
        if "file" not in fields:
            self._reply(400, "missing file part")
            return
        filename, data = fields["file"]
        if not acceptable_name(filename):
            self._reply(400, "bad file name")
            return
        assert filename is not None
        target = self.server.directory / filename
        tmp = target.with_name(f".{filename}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.server.received += 1
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        print(f"recv_timestamp: {stamp} {filename}", flush=True)
        self._reply(200, "File received")

    def log_message(self, format: str, *args: Any) -> None:
        return None  # one line per file is printed above; no access log


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.received = 0
        super().__init__(address, _Handler)
