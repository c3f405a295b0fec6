"""A standby master's servers: on the master's own gRPC and HTTP ports, every call is answered
with where the leader is, so that clients, agents and load balancers go there.

gRPC: any method (client API, agent link, the seed's ImageUpload) ends with UNAVAILABLE,
details "standby master: ...", and trailing metadata ``edgesched-leader`` = "host:grpc_port" and
``edgesched-leader-http`` = "host:http_port" when the leader is known. HTTP: every route (the
health check too) answers 503 with JSON {"error", "role": "standby", "leader"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgesched.config import Settings
from edgesched.master.lease import Holder
from edgesched.master.server import (
    QuietServer,
    bind_grpc,
    grpc_host,
    grpc_options,
    http_socket,
    http_tls,
    write_endpoints,
)
from edgesched.masters import LEADER_HTTP_KEY, LEADER_KEY

log = logging.getLogger("edgesched.master")

RETRY_AFTER_S = 1  #: what the HTTP answer suggests: a standby tries the lease this often

#: what a standby knows of the leader (None: it has not read the lease yet)
LeaderView = Callable[[], Holder | None]


def standby_message(view: Holder | None) -> str:
    """The "standby master: ..." text every answer of a standby carries."""
    if view is None or not view.holder:
        return "standby master: no leader is elected yet, try again shortly"
    if view.leader is None:
        return (
            "standby master: the leader advertises no address (set master.advertise on every "
            "master that binds a wildcard address)"
        )
    where = view.leader
    return f"standby master: the leader is at {grpc_host(where.host)}:{where.grpc_port}"


def leader_metadata(view: Holder | None) -> tuple[tuple[str, str], ...]:
    if view is None or not view.holder or view.leader is None:
        return ()
    where = view.leader
    host = grpc_host(where.host)
    return (
        (LEADER_KEY, f"{host}:{where.grpc_port}"),
        (LEADER_HTTP_KEY, f"{host}:{where.http_port}"),
    )


class _Refuser(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every method: a stream-stream handler over raw bytes serves unary and streaming
    calls alike (the wire is the same), and never reads the request."""

    def __init__(self, view: LeaderView) -> None:
        self._view = view

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
            current = self._view()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                standby_message(current),
                trailing_metadata=leader_metadata(current),
            )

        return grpc.stream_stream_rpc_method_handler(refuse)


def standby_app(view: LeaderView) -> Starlette:
    """Every path and method: 503 with the standby's JSON (GET /healthz too, so that a load
    balancer's health check picks the leader)."""

    async def answer(request: Request) -> JSONResponse:
        current = view()
        leader = current.leader if current is not None and current.holder else None
        return JSONResponse(
            {
                "error": standby_message(current),
                "role": "standby",
                "leader": leader.as_json() if leader is not None else None,
            },
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[Route("/", answer, methods=methods), Route("/{path:path}", answer, methods=methods)]
    )


class StandbyServers:
    """The standby's gRPC server and HTTP app on the master's ports. Owns both and their
    socket; ``start`` binds (port 0 is resolved: ``grpc_port``/``http_port`` say what was
    bound), ``stop`` frees the ports for the leader's servers, which bind them next."""

    def __init__(self, settings: Settings, view: LeaderView) -> None:
        self.settings = settings
        self.view = view
        self.grpc_port = 0
        self.http_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._http: QuietServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        s = self.settings.master
        server = grpc.aio.server(options=grpc_options(s.max_upload_bytes + 1024 * 1024))
        server.add_generic_rpc_handlers((_Refuser(self.view),))
        self.grpc_port = bind_grpc(server, s)
        await server.start()
        self._grpc = server
        try:
            sock = http_socket(s)
        except OSError:
            await self.stop()
            raise
        self._sock = sock
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            standby_app(self.view),
            log_level="warning",
            lifespan="off",
            access_log=False,
            **http_tls(s),
        )
        self._http = QuietServer(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        await asyncio.to_thread(write_endpoints, s.data_dir, self.grpc_port, self.http_port)

    async def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(self._http_task, 5)
            self._http = None
            self._http_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
            self._grpc = None
