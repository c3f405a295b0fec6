"""API authentication: a bearer token for the client API and for every route that changes
something. gRPC checks it in one interceptor; HTTP in one FastAPI dependency.

``master.auth``: ``off``; ``api`` (the default: TaskService and changing REST routes); ``all``
(also the seed's ImageUpload and /schedule — `--require-auth`). The agent link has its own
admission (join token, then the agent's credential) and is never subject to the API token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from edgesched.master.token import tokens_equal

#: gRPC services the API token guards, per auth mode
GUARDED = {
    "off": (),
    "api": ("/edgesched.v1.TaskService/",),
    "all": ("/edgesched.v1.TaskService/", "/ImageUpload/"),
}


def bearer(value: str | None) -> str:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return ""


def token_ok(presented: str, expected: str) -> bool:
    return bool(presented) and tokens_equal(presented, expected)


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, mode: Callable[[], str], token: Callable[[], str]) -> None:
        self._mode = mode
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or not method.startswith(GUARDED[self._mode()]):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if token_ok(bearer(metadata.get("authorization")), self._token()):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that refuses the call."""
    message = "missing or wrong API token: send 'authorization: Bearer <token>' (token show --api)"

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None  # pragma: no cover - abort raises

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
