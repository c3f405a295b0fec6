"""A bare HTTP receiver of the seed protocol's result pushes: it logs each file in the ledger
before anything else, so the grade never trusts the journal under test."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgesched.tools.chaos.ledger import Ledger

# ---- the receiver -----------------------------------------------------------------------

_FILE_PART = re.compile(rb'name="file"; filename="([^"]+)"')


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the master pushes 16 at a time; 5 (the default) refuses some
    daemon_threads = True


class Receiver:
    """A bare ``POST /recv_rst`` receiver that logs each file name before anything else."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the pusher died while sending: nothing was handed over
                taken = [ledger.receive(m.group(1).decode()) for m in _FILE_PART.finditer(body)]
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "13")
                    self.end_headers()
                    self.wfile.write(b"File received")
                    self.wfile.flush()
                except OSError:
                    return  # the master was killed before it read the answer
                for reception in taken:
                    reception.answered = True

            def log_message(self, *args: Any) -> None:
                return None

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
