"""The one place where edgesched errors become gRPC status codes and HTTP statuses."""

from __future__ import annotations

import grpc

from edgesched import errors

_GRPC: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),  # before BadInputError
    (errors.UnknownPluginError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.BadInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DiskFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.JournalError, grpc.StatusCode.UNAVAILABLE),
    (errors.AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.TransportError, grpc.StatusCode.UNAVAILABLE),
]

_HTTP: list[tuple[type[Exception], int]] = [
    (errors.LimitExceededError, 413),  # before BadInputError
    (errors.UnknownPluginError, 400),
    (errors.BadInputError, 400),
    (errors.LimitExceededError, 413),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.DiskFullError, 503),  # no new work until space returns; the message says why
    (errors.JournalError, 503),
    (errors.AuthError, 401),
    (errors.ConfigError, 400),
    (errors.TransportError, 503),
]


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    for kind, code in _GRPC:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def http_status(exc: BaseException) -> int:
    for kind, status in _HTTP:
        if isinstance(exc, kind):
            return status
    return 500


def printable(message: str) -> str:
    """An error message every wire can carry: a lone surrogate from the input (JSON can spell
    one) is escaped. gRPC hangs the call on abort() with one; JSON answers fail with a 500."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
