"""The seed-protocol client of a chaos run: threads uploading pictures over gRPC, retrying with
the same req_id across master crashes, with a bounded window of unanswered tasks."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgesched.tools.chaos.ledger import Ledger
from edgesched.tools.chaos.plan import Picture

UPLOAD_THREADS = 8
#: good tasks acknowledged but without a result yet, at most (a twentieth of the run, within
#: these bounds): uploads then last the whole run, so a kill at any point of it lands among
#: uploads, assignments and result pushes alike
UPLOAD_WINDOW = (10, 100)
#: the gRPC codes a crashed or restarting master produces; the upload is retried (same req_id)
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL")


def _body(picture: Picture) -> bytes:
    body = {
        "filename": picture.name,
        "content_b64": base64.b64encode(picture.data).decode(),
        "tasktype": "layout",
        "req_id": picture.req_id,
    }
    return json.dumps(body).encode("utf-8")


def _upload_one(call: Any, picture: Picture, ledger: Ledger, deadline: float) -> None:
    """Sends one picture until it is acknowledged, refused for good, or time runs out."""
    import grpc

    delay = 0.1
    while time.monotonic() < deadline:
        try:
            with ledger.sending():
                reply = call(_body(picture), timeout=10, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is None or code.name not in RETRYABLE:
                ledger.refuse(picture.name, f"{code}: {exc.details()}")
                return
        else:
            ledger.ack(picture, json.loads(reply)["filename"])
            return
        ledger.resent()
        time.sleep(delay)
        delay = min(2.0, delay * 2)
    ledger.refuse(picture.name, "not acknowledged before the timeout")


@dataclass
class Uploads:
    target: str  #: the master's gRPC address (the same across restarts)
    queue: list[Picture]  #: still to send, popped from the end
    ledger: Ledger
    window: int
    deadline: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Picture | None:
        self.ledger.wait_for_room(self.window, self.deadline)
        with self.lock:
            return self.queue.pop() if self.queue else None


def _upload_worker(uploads: Uploads) -> None:
    import grpc

    # reconnect quickly after a master restart instead of gRPC's default backoff (up to 120 s)
    options = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    with grpc.insecure_channel(uploads.target, options=options) as channel:
        call = channel.unary_unary("/ImageUpload/UploadImage")
        while (picture := uploads.next()) is not None:
            _upload_one(call, picture, uploads.ledger, uploads.deadline)


def start_uploads(
    target: str, pictures: list[Picture], ledger: Ledger, deadline: float
) -> list[threading.Thread]:
    low, high = UPLOAD_WINDOW
    window = max(low, min(high, len(pictures) // 20))
    uploads = Uploads(target, list(reversed(pictures)), ledger, window, deadline)
    threads = [
        threading.Thread(target=_upload_worker, args=(uploads,), daemon=True)
        for _ in range(UPLOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    return threads
