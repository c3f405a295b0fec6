"""The link's transport: TLS, asking the gateway for the link port, the gRPC channel, and the
stream's outgoing half. No state: ``session`` keeps the link, these only open it."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Optional

import grpc

from edgesched import masters
from edgesched.config import AgentSettings
from edgesched.errors import TransportError
from edgesched.v1 import agent_pb2_grpc
from edgesched.wire import link as wire

PROTOCOL = wire.protocol(1, 2)  # 1.1: payloads inline; 1.2: batches

#: the most reports, and their bytes, one ReportBatch carries: 1 MiB stays within the master's
#: message limit (at least its upload limit + 1 MiB); a larger report (a result may hold a 1 MiB
#: label) goes alone, as it always has; what is left goes in the next message
BATCH_REPORTS = 512
BATCH_BYTES = 1024 * 1024

#: what goes up the link; None half-closes it
SendQueue = asyncio.Queue[Optional[wire.AgentMessage]]  # Optional: runs on Python 3.9

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class Refused(Exception):
    """The master refused this agent; retrying with the same settings cannot help."""


def tls_context(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """Verifies the master against ``ca``; presents ``cert`` (mutual TLS) when given."""
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


def discover_link_port(
    host: str,
    http_port: int,
    timeout: float = 3.0,
    context: Optional[ssl.SSLContext] = None,  # noqa: UP045
) -> int:
    """Asks the gateway which port the link runs on; the agent dials the host it was given.

    With TLS the question goes over the same TLS, verified against the cluster's CA. A standby
    master's 503 raises StandbyMasterError with its hint (where the leader is).
    """
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{masters.Address(host, http_port)}/api/v1/link"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return int(json.loads(response.read())["link_port"])
    except urllib.error.HTTPError as exc:
        answer = masters.from_json(exc.read()) if exc.code == 503 else masters.NO_ANSWER
        if answer.standby:
            raise masters.standby_error(f"{url}: a standby master answered", answer) from exc
        raise TransportError(f"cannot reach the gateway at {url}: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise TransportError(f"cannot reach the gateway at {url}: {exc}") from exc


def gateways(a: AgentSettings) -> masters.Rotation:
    """The masters ``agent.master_ip`` lists ("a,b,c"), their gateways on ``master_port``."""
    return masters.Rotation(masters.parse_masters(a.master_ip, a.master_port, "agent.master_ip"))


async def link_target(a: AgentSettings, rotation: Optional[masters.Rotation] = None) -> str:  # noqa: UP045
    """``host:port`` of the link of the master to try: the hinted leader's, else the list's
    next; the configured port (the same on every master), or the gateway's answer. Records in
    ``rotation.asked`` which address it asked or dials (a hint naming it is a loop)."""
    rotation = rotation or gateways(a)
    leader = rotation.leader
    if leader is not None and (a.link_port or leader.grpc_port):
        target = masters.Address(leader.host, a.link_port or leader.grpc_port)
        rotation.asked = target
        return str(target)
    if leader is None:
        gateway = rotation.current
    else:  # a hint without the gRPC port: ask the leader's gateway
        gateway = leader.http() or masters.Address(leader.host, a.master_port)
    rotation.asked = gateway
    if a.link_port:
        return str(masters.Address(gateway.host, a.link_port))
    context = tls_context(a.tls_ca, a.tls_cert, a.tls_key) if a.tls_ca else None
    port = await asyncio.to_thread(discover_link_port, gateway.host, gateway.port, 3.0, context)
    target = masters.Address(gateway.host, port)
    rotation.asked = target
    return str(target)


def open_channel(a: AgentSettings, target: str) -> grpc.aio.Channel:
    """A channel to ``target``: TLS (mutual when the agent has a certificate) when a CA is set."""
    if not a.tls_ca:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(a.tls_ca).read_bytes(),
        private_key=Path(a.tls_key).read_bytes() if a.tls_key else None,
        certificate_chain=Path(a.tls_cert).read_bytes() if a.tls_cert else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


async def outgoing(
    send_q: SendQueue, batches: Callable[[], bool] = lambda: False
) -> AsyncIterator[wire.AgentMessage]:
    """The stream's outgoing half: what is queued, in order, until a None half-closes it.

    While ``batches()`` (the master speaks ≥ 1.2), the reports (started, result, failure)
    queued when this loop gets to them go in one ReportBatch, bounded by ``BATCH_REPORTS`` and
    ``BATCH_BYTES``: whatever has queued, never a wait, so a lone report leaves at once and as
    itself. A heartbeat or goodbye between reports ends a batch, so the order holds (the
    outbox's confirmation by heartbeat acks relies on it)."""
    while True:
        message = await send_q.get()
        if message is None:
            return  # half-close: the master reads everything sent before, then ends
        if send_q.empty() or not batches():
            yield message
            continue
        queued: list[Optional[wire.AgentMessage]] = [message]  # noqa: UP045 - Python 3.9
        while queued[-1] is not None and not send_q.empty() and len(queued) < BATCH_REPORTS:
            queued.append(send_q.get_nowait())  # up to a half-close, never past it
        run: list[wire.AgentMessage] = []
        size = 0
        for item in queued:
            report = item is not None and wire.kind_of(item) in wire.REPORT_KINDS
            item_size = item.ByteSize() if report and item is not None else 0
            if run and (not report or size + item_size > BATCH_BYTES):
                yield run[0] if len(run) == 1 else wire.report_batch(run)
                run, size = [], 0
            if item is None:
                return
            if not report:
                yield item
                continue
            run.append(item)
            size += item_size
        if run:
            yield run[0] if len(run) == 1 else wire.report_batch(run)


def short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def link_stub(channel: grpc.aio.Channel) -> agent_pb2_grpc.AgentLinkStub:
    """The agent link's stub on ``channel`` (the real agent's and the simulated fleet's)."""
    return agent_pb2_grpc.AgentLinkStub(channel)
