"""The seed-protocol client of a chaos run: threads uploading pictures over gRPC, retrying with
the same req_id across master crashes (with several masters: to the leader a standby names, or
the next address, as a virtual IP in front of them would), with a bounded window of unanswered
tasks."""

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


def leader_hint(exc: Any) -> str:
    """The leader's gRPC address a standby master named in its answer ("" when none)."""
    from edgesched.masters import from_rpc_error

    leader = from_rpc_error(exc).leader
    grpc_address = leader.grpc() if leader is not None else None
    return str(grpc_address) if grpc_address is not None else ""


class Targets:
    """The masters' addresses as one seed client sees them behind a virtual IP: the current one,
    the leader a standby names, else the next in turn (one channel each, kept)."""

    def __init__(self, addresses: list[str]) -> None:
        import grpc

        self.addresses = list(addresses)
        self.current = self.addresses[0]
        # reconnect quickly after a master restart instead of gRPC's default backoff (≤ 120 s)
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._channels: dict[str, grpc.Channel] = {}
        self._options = options

    def call(self) -> Any:
        import grpc

        channel = self._channels.get(self.current)
        if channel is None:
            channel = self._channels[self.current] = grpc.insecure_channel(
                self.current, options=self._options
            )
        return channel.unary_unary("/ImageUpload/UploadImage")

    def failed(self, exc: Any) -> None:
        """After a retryable error: the named leader, else the next address."""
        hint = leader_hint(exc)
        if hint and hint != self.current:
            self.current = hint
        elif len(self.addresses) > 1:
            at = self.addresses.index(self.current) if self.current in self.addresses else -1
            self.current = self.addresses[(at + 1) % len(self.addresses)]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def _upload_one(targets: Targets, picture: Picture, ledger: Ledger, deadline: float) -> None:
    """Sends one picture until it is acknowledged, refused for good, or time runs out."""
    import grpc

    delay = 0.1
    several = len(targets.addresses) > 1
    while time.monotonic() < deadline:
        try:
            with ledger.sending():
                # one master: wait for it to come back; several: a dead one is skipped at once
                reply = targets.call()(_body(picture), timeout=10, wait_for_ready=not several)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is None or code.name not in RETRYABLE:
                ledger.refuse(picture.name, f"{code}: {exc.details()}")
                return
            targets.failed(exc)
        else:
            ledger.ack(picture, json.loads(reply)["filename"])
            return
        ledger.resent()
        time.sleep(delay)
        delay = min(2.0, delay * 2)
    ledger.refuse(picture.name, "not acknowledged before the timeout")


@dataclass
class Uploads:
    targets: list[str]  #: the masters' gRPC addresses (each the same across restarts)
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
    targets = Targets(uploads.targets)
    try:
        while (picture := uploads.next()) is not None:
            _upload_one(targets, picture, uploads.ledger, uploads.deadline)
    finally:
        targets.close()


def start_uploads(
    targets: list[str], pictures: list[Picture], ledger: Ledger, deadline: float
) -> list[threading.Thread]:
    low, high = UPLOAD_WINDOW
    window = max(low, min(high, len(pictures) // 20))
    uploads = Uploads(targets, list(reversed(pictures)), ledger, window, deadline)
    threads = [
        threading.Thread(target=_upload_worker, args=(uploads,), daemon=True)
        for _ in range(UPLOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    return threads
