"""The seed's sender protocol: JSON over generic gRPC methods (``--legacy``).

Speaks exactly what the seed's ``send_pic.py`` / ``req_send.py --batch`` send, so it can drive a
seed master too. Results then come to the client's ``/recv_rst`` receiver, not over gRPC.
"""

from __future__ import annotations

import base64
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

UNARY = "/ImageUpload/UploadImage"
STREAM = "/ImageUpload/UploadImages"
MAX_MESSAGE = 128 * 1024 * 1024


@dataclass
class LegacyReport:
    sent: int = 0
    saved: int = 0
    failed: int = 0


def _message(path: Path, task_type: str, **extra: object) -> bytes:
    data = {
        "filename": path.name,
        "content_b64": base64.b64encode(path.read_bytes()).decode("ascii"),
        "tasktype": task_type,
        **extra,
    }
    return json.dumps(data).encode()


def _channel(target: str) -> grpc.Channel:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    return grpc.insecure_channel(target, options=options)


def send_legacy(target: str, paths: list[Path], task_type: str, workers: int = 8) -> LegacyReport:
    """One unary UploadImage per file, ``workers`` at a time; prints the seed's lines."""
    report = LegacyReport(sent=len(paths))
    with _channel(target) as channel:
        call = channel.unary_unary(UNARY)  # no serializers: the bodies are raw bytes

        def one(path: Path) -> bool:
            try:
                reply = json.loads(call(_message(path, task_type), timeout=60))
                print(f"sent {path.name} -> status=200, resp=saved:{reply['saved_path']}")
                return True
            except grpc.RpcError as exc:
                print(f"sent {path.name} -> status=-1, resp=error: {exc.details()}")
                return False

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for ok in pool.map(one, paths):
                report.saved += ok
    report.failed = report.sent - report.saved
    return report


def send_legacy_batch(
    target: str, paths: list[Path], task_type: str, req_id: str = ""
) -> LegacyReport:
    """All files in one client-streaming UploadImages call (the seed's ``req_send --batch``)."""
    report = LegacyReport(sent=len(paths))
    req = req_id or f"req_{uuid.uuid4().hex}"

    def messages() -> object:
        for index, path in enumerate(paths):
            extra: dict[str, object] = {"req_id": req}
            if index == 0:
                extra["total_num"] = len(paths)
            yield _message(path, task_type, **extra)

    with _channel(target) as channel:
        call = channel.stream_unary(STREAM)
        try:
            reply = json.loads(call(messages(), timeout=300))
            report.saved = int(reply["saved_count"])
            print(f"sent {len(paths)} files in one stream -> saved_count={report.saved}")
        except grpc.RpcError as exc:
            print(f"stream -> status=-1, resp=error: {exc.details()}")
    report.failed = report.sent - report.saved
    return report
