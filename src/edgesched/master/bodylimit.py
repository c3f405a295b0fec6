"""A body size limit on every HTTP route, before anything reads the body into memory.

A declared ``Content-Length`` over the limit is answered 413 at once; a body sent in chunks
(no length, or a lying one) is counted as it arrives and cut off with 413 once it passes the
limit. Upload routes have their own, larger limit (the upload size setting).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: past the limit, up to this much more is read and dropped before the 413, so that a client
#: still sending sees the answer instead of a reset connection; a larger body is cut off
DRAIN_BYTES = 16 * 1024 * 1024


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        limit: Callable[[], int],
        routes: Mapping[str, Callable[[], int]] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.routes[path]() if path in self.routes else self.limit()
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    if declared <= limit + DRAIN_BYTES:
                        await _drain(receive, DRAIN_BYTES + limit)
                    await _refuse(send, path, limit)
                    return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # answered here and now: the route sees a client that went away, and
                    # whatever it answers to that is dropped
                    refused = True
                    if not started:
                        if message.get("more_body", False):
                            await _drain(receive, DRAIN_BYTES)
                        await _refuse(send, path, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not refused:
                raise


async def _drain(receive: Receive, budget: int) -> None:
    """Reads and drops the rest of a body, at most ``budget`` bytes of it."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, path: str, limit: int) -> None:
    body = json.dumps(
        {
            "status": "error",
            "msg": f"request body over the limit of {limit} bytes for {path[:100]} "
            "(master.max_request_bytes; uploads: master.max_upload_bytes)",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
