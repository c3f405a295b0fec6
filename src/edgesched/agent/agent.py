"""The agent: dials the master, keeps the link, runs what it is given, returns every result.

One link at a time; when it breaks the agent dials again with capped, jittered backoff.
Results finished while the link is down wait in the outbox and go first on the next link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import grpc

from edgesched import __version__
from edgesched.agent.backends import Backend, BackendResult, make_backend
from edgesched.agent.emulation import PROFILES, Profile, SlotMeter, get_profile
from edgesched.agent.identity import Identity
from edgesched.agent.outbox import Outbox
from edgesched.agent.pacing import BandwidthTrace, Pacer
from edgesched.agent.probes import GenericProbe, ProbeCollector, ProbeEnv
from edgesched.agent.probes import detect as detect_probes
from edgesched.config import Settings
from edgesched.errors import BadInputError, TransportError, UnknownPluginError
from edgesched.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = logging.getLogger("edgesched.agent")

PROTOCOL = agent_pb2.ProtocolVersion(major=1, minor=1)  # 1.1: payloads inline
DEVICE_ALIASES = {"ATLAS_I": "atlas310", "RK3588": "rk3588", "ORIN": "orin"}
DEVICE_TYPES = ("auto", "cpu", "atlas310", "rk3588", "orin", "nvidia")
#: slots follow the hardware: an RK3588 runs one task per NPU core
HARDWARE_SLOTS = {"rk3588": 3, "atlas310": 1, "orin": 1, "nvidia": 1, "cpu": 1}
#: what --device-type auto becomes when that probe detects its board
PROBE_DEVICE = {"ascend": "atlas310", "rknpu": "rk3588", "jetson": "orin", "nvidia": "nvidia"}
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0


#: payloads this large measure the link's bandwidth (smaller ones are mostly round trip); the
#: master sends smaller ones inline with their assignment (edgesched.master.session.INLINE_BYTES)
MIN_MEASURED_BYTES = 64 * 1024

#: what goes up the link; None half-closes it
SendQueue = asyncio.Queue[Optional[agent_pb2.AgentMessage]]  # Optional: runs on Python 3.9


class Refused(Exception):
    """The master refused this agent; retrying with the same settings cannot help."""


@dataclass
class _Inbound:
    assignment: agent_pb2.Assignment
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    first_at: float = 0.0
    arrived_at: float = 0.0


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

    With TLS the question goes over the same TLS, verified against the cluster's CA.
    """
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{host}:{http_port}/api/v1/link"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return int(json.loads(response.read())["link_port"])
    except (OSError, ValueError, KeyError) as exc:
        raise TransportError(f"cannot reach the gateway at {url}: {exc}") from exc


class Agent:
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        a = settings.agent
        self.profile: Profile | None = get_profile(a.emulate) if a.emulate else None
        requested = DEVICE_ALIASES.get(a.device_type, a.device_type)
        if requested not in DEVICE_TYPES:
            raise UnknownPluginError("device type", a.device_type, [*DEVICE_TYPES, *DEVICE_ALIASES])
        # an emulated board reports no real accelerator figures: only the host's
        chain = [GenericProbe(ProbeEnv())] if self.profile is not None else detect_probes()
        self.probes = ProbeCollector(chain, timeout_s=10.0)
        if self.profile is not None:
            self.device_type = self.profile.name
        elif requested == "auto":
            found = [p.name for p in chain]
            self.device_type = next((PROBE_DEVICE[n] for n in found if n in PROBE_DEVICE), "cpu")
        else:
            self.device_type = requested
        self.backend: Backend = make_backend(settings, self.device_type)
        hardware = HARDWARE_SLOTS.get(self.device_type, 1)
        self.slots = a.slots or (self.profile.slots if self.profile else hardware)
        self.identity = Identity.load(a.data_dir)
        self.rng = rng or random.Random(a.seed or None)
        self.meter = SlotMeter(self.slots, time.monotonic())
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="infer")
        #: every task the master gave and whose payload is here: running, or waiting for a slot
        #: (the master sends up to slots + scheduling.prefetch, so the next payload travels
        #: while the current task runs)
        self.running: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._slot_gate: Optional[asyncio.Semaphore] = None  # noqa: UP045 - made in the loop
        self.outbox = Outbox(Path(a.data_dir) / "outbox")
        #: outbox files sent on this link, removed once a later heartbeat is acknowledged
        self._unconfirmed: list[tuple[int, list[Path]]] = []
        #: results sent on this link and not yet covered by an acknowledged heartbeat: if the
        #: link turns out to be dead they go to the outbox instead of being lost
        self._unacked: list[tuple[int, agent_pb2.AgentMessage]] = []
        self.draining = False
        #: draining to leave (SIGTERM): kept on a new link; an operator's drain is not (the
        #: master tells a rejoining agent again when an operator drained it)
        self._stopping = False
        self._leave = asyncio.Event()
        self._idle = asyncio.Event()  #: set whenever the last running task ends
        self._send_q: SendQueue | None = None
        self._inbound: dict[tuple[str, int], _Inbound] = {}
        self._hb_sent: dict[int, float] = {}
        self._hb_seq = 0
        self._echo = 0
        self.latency_ms = 0.0
        self.bandwidth_mbps = 0.0
        self.session_no = 0
        trace = BandwidthTrace(a.seed or 1, a.bandwidth_step_s) if a.bandwidth_fluctuate else None
        self.pacer = Pacer(a.bandwidth_limit_mbps, trace)
        self._started = time.monotonic()
        self.connected = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keeps a link to the master until ``stop`` is set."""
        self.probes.start()
        try:
            await self._churn(stop)
        finally:
            self.probes.close()
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _churn(self, stop: asyncio.Event) -> None:
        """The seed's simulated churn (``--disconnect S --reconnect R``): every S seconds the
        agent leaves as on SIGTERM (drains, hands back what it cannot finish, says goodbye),
        stays away R seconds, then joins again with the same id. Either ≤ 0: stay until stop."""
        a = self.settings.agent
        if a.disconnect_s <= 0 or a.reconnect_s <= 0:
            await self._run(stop)
            return
        while not stop.is_set():
            leave = asyncio.Event()
            timer = asyncio.ensure_future(self._leave_after(a.disconnect_s, stop, leave))
            try:
                await self._run(leave)
            finally:
                timer.cancel()
            if stop.is_set():
                return
            log.info("simulated disconnect: rejoining in %.1f s", a.reconnect_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), a.reconnect_s)
            self._leave.clear()
            self.draining = False

    async def _leave_after(self, seconds: float, stop: asyncio.Event, leave: asyncio.Event) -> None:
        """Sets ``leave`` after ``seconds`` of membership, or at once when ``stop`` is set."""
        joined = asyncio.ensure_future(self.connected.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({joined, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            stopped.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        leave.set()

    async def _run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.backend.warm)
        delay = BACKOFF_MIN_S
        while not self._leave.is_set():
            if stop.is_set() and not self.connected.is_set() and not self.running:
                break  # stopping with nothing to hand over: results are in the outbox
            started = time.monotonic()
            try:
                await self._link(stop)
            except Refused:
                raise
            except (TransportError, grpc.aio.AioRpcError, OSError) as exc:
                log.warning("link to master failed: %s", _short(exc))
            self.connected.clear()
            if self._leave.is_set():
                break
            if time.monotonic() - started > 10:
                delay = BACKOFF_MIN_S  # the link had been up: start the backoff again
            wait = self.rng.uniform(delay / 2, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._leave.wait(), wait)
            delay = min(BACKOFF_MAX_S, delay * 2)

    def _register(self) -> agent_pb2.AgentMessage:
        held = self.backend.artefacts()
        caps = agent_pb2.Capabilities(
            task_types=sorted({a.task_type for a in held}),
            artefacts=[
                agent_pb2.ModelArtefact(
                    task_type=a.task_type,
                    format=a.format,
                    target=a.target,
                    sha256=a.sha256,
                    backend=a.backend,
                )
                for a in held
            ],
            model_formats=list(self.profile.formats if self.profile else self.backend.formats),
            sub_devices=self._sub_devices(),
            slots=self.slots,
            backends=[self.backend.name],
        )
        return agent_pb2.AgentMessage(
            register=agent_pb2.Register(
                protocol=PROTOCOL,
                join_token=self.settings.agent.token,
                agent_id=self.identity.agent_id,
                credential=self.identity.credential,
                hostname=socket.gethostname(),
                device_type=self.device_type,
                emulated=self.profile is not None,
                emulation_profile=self.profile.name if self.profile else "",
                time_scale=self.settings.agent.time_scale,
                capabilities=caps,
                running_task_ids=sorted(self.running),
                finished_task_ids=self.outbox.finished_task_ids(),
                agent_version=__version__,
                static_info=self._static_info(),
                session=self.session_no,
            )
        )

    def _sub_devices(self) -> list[agent_pb2.SubDevice]:
        """The board's NPU cores / GPU / chips, when its slots are the hardware's own."""
        profile = self.profile or PROFILES.get(self.device_type)
        if profile is not None and profile.slots == self.slots:
            return [
                agent_pb2.SubDevice(name=s.name, kind=s.kind, slots=s.slots)
                for s in profile.sub_devices
            ]
        return [agent_pb2.SubDevice(name="cpu", kind="cpu", slots=self.slots)]

    def _static_info(self) -> dict[str, str]:
        info = {
            "backend": self.backend.name,
            "probes": ",".join(p.name for p in self.probes.probes),
        }
        for probe in self.probes.probes:
            for key, value in probe.static_info().items():
                if value not in (None, "") and key != "kind":
                    info[f"{probe.name}.{key}"] = str(value)
        if self.profile is not None:
            info["emulation_source"] = self.profile.source
        return info

    async def _link(self, stop: asyncio.Event) -> None:
        a = self.settings.agent
        context = tls_context(a.tls_ca, a.tls_cert, a.tls_key) if a.tls_ca else None
        port = a.link_port or await asyncio.to_thread(
            discover_link_port, a.master_ip, a.master_port, 3.0, context
        )
        target = f"{a.master_ip}:{port}"
        options = [
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        self.session_no += 1
        async with self._channel(target, options) as channel:
            stub = agent_pb2_grpc.AgentLinkStub(channel)
            send_q: SendQueue = asyncio.Queue()
            self._send_q = send_q
            send_q.put_nowait(self._register())
            call = stub.Connect(self._outgoing(send_q))
            heartbeats: asyncio.Task[None] | None = None
            drainer: asyncio.Task[None] | None = None
            leave = asyncio.create_task(self._leave.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                reader = call.__aiter__()  # not aiter(): agents run on Python 3.9
                next_msg: asyncio.Future[agent_pb2.MasterMessage] | None = None
                while True:
                    if stop.is_set() and drainer is None:
                        drainer = asyncio.create_task(self._drain(send_q))
                    if next_msg is None:
                        next_msg = asyncio.ensure_future(reader.__anext__())
                    waiting = {next_msg, leave} if stopper.done() else {next_msg, leave, stopper}
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if leave in done:
                        await self._say_goodbye(send_q, next_msg)
                        call.cancel()
                        return
                    if next_msg not in done:
                        continue
                    try:
                        message = next_msg.result()
                    except StopAsyncIteration:
                        raise TransportError("the master closed the link") from None
                    finally:
                        next_msg = None
                    kind = message.WhichOneof("kind")
                    if self.pacer.active and kind in ("chunk", "assignment"):
                        # a slow uplink: the payload takes its time, and what follows waits
                        size = (
                            len(message.chunk.data)
                            if kind == "chunk"
                            else len(message.assignment.payload)
                        )
                        t = time.monotonic() - self._started
                        await asyncio.sleep(self.pacer.delay_s(size, t))
                    if kind == "registered":
                        heartbeats = self._on_registered(message.registered, send_q)
                    elif kind == "refused":
                        if message.refused.code == "limit":  # the master's join limits: for now
                            raise TransportError(f"refused for now: {message.refused.message}")
                        raise Refused(f"{message.refused.code}: {message.refused.message}")
                    else:
                        self._on_message(message)
            finally:
                leave.cancel()
                stopper.cancel()
                for _, unacked in self._unacked:  # sent into a link that died: keep them
                    self.outbox.put(unacked)
                self._unacked.clear()
                self._send_q = None
                for task in (heartbeats, drainer):
                    if task is not None:
                        task.cancel()

    def _channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        a = self.settings.agent
        if not a.tls_ca:
            return grpc.aio.insecure_channel(target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(a.tls_ca).read_bytes(),
            private_key=Path(a.tls_key).read_bytes() if a.tls_key else None,
            certificate_chain=Path(a.tls_cert).read_bytes() if a.tls_cert else None,
        )
        return grpc.aio.secure_channel(target, credentials, options=options)

    def _on_registered(
        self, reply: agent_pb2.RegisterReply, send_q: SendQueue
    ) -> asyncio.Task[None]:
        if (reply.agent_id, reply.credential) != (self.identity.agent_id, self.identity.credential):
            self.identity = Identity(reply.agent_id, reply.credential)
            self.identity.save(self.settings.agent.data_dir)
        for task_id in reply.drop_task_ids:
            self._cancel(task_id, "the master moved it elsewhere", report=False)
        log.info("joined the master as %s (%d slots)", reply.agent_id, self.slots)
        self._unconfirmed.clear()
        items = self.outbox.items()
        for _, message in items:
            send_q.put_nowait(message)
        if items:
            log.info("sending %d results kept while the link was down", len(items))
            # the next heartbeat's ack proves the master has read them
            self._unconfirmed.append((self._hb_seq + 1, [path for path, _ in items]))
        self.draining = self._stopping  # a new link: undrained unless this agent is leaving
        self.connected.set()
        interval = max(0.05, reply.heartbeat_interval_ms / 1000.0)
        return asyncio.create_task(self._heartbeats(interval, send_q))

    async def _outgoing(self, send_q: SendQueue) -> AsyncIterator[agent_pb2.AgentMessage]:
        while True:
            message = await send_q.get()
            if message is None:
                return  # half-close: the master reads everything sent before, then ends
            yield message

    async def _say_goodbye(
        self,
        send_q: SendQueue,
        pending: asyncio.Future[agent_pb2.MasterMessage],
    ) -> None:
        """Goodbye, then half-close, then wait (briefly) for the master to end the stream."""
        send_q.put_nowait(agent_pb2.AgentMessage(goodbye=agent_pb2.Goodbye(reason="stopping")))
        send_q.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pending, 3.0)

    def _send(self, message: agent_pb2.AgentMessage) -> None:
        """Sends now, or keeps a result on disk for the next link if there is none."""
        keep = message.HasField("result") or message.HasField("failure")
        if self._send_q is not None and self.connected.is_set():
            self._send_q.put_nowait(message)
            if keep:
                self._unacked.append((self._hb_seq + 1, message))
        elif keep:
            self.outbox.put(message)

    async def _drain(self, send_q: SendQueue) -> None:
        """SIGTERM: take nothing new, finish what runs (bounded), then leave."""
        self._stopping = True
        self.draining = True
        send_q.put_nowait(self._heartbeat())  # tells the master at once
        log.info("draining: %d tasks to finish", len(self.running))
        if self.running:
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.agent.drain_timeout_s)
        if self.running:
            log.warning("drain timeout: handing %d tasks back", len(self.running))
        await asyncio.sleep(0.05)  # results just queued leave before the goodbye
        self._leave.set()

    # ---- heartbeats --------------------------------------------------------------------

    async def _heartbeats(self, interval: float, send_q: SendQueue) -> None:
        while True:
            send_q.put_nowait(self._heartbeat())
            await asyncio.sleep(interval * self.rng.uniform(0.95, 1.0))

    def _heartbeat(self) -> agent_pb2.AgentMessage:
        now = time.monotonic()
        sample, sources = self.probes.latest()  # never waits on a slow probe
        power = float("nan") if sample.power_w is None else sample.power_w
        if self.profile is not None:
            xpu = self.meter.utilisation(now)
            power = self.profile.power_w(xpu)
        else:
            xpu = -1.0 if sample.xpu_util is None else sample.xpu_util
        self._hb_seq += 1
        self._hb_sent[self._hb_seq] = now
        for old in [s for s in self._hb_sent if s < self._hb_seq - 16]:
            del self._hb_sent[old]
        xpu_memory = -1.0
        if sample.xpu_mem_used_mb is not None and sample.xpu_mem_total_mb:
            xpu_memory = sample.xpu_mem_used_mb / sample.xpu_mem_total_mb
        metrics = agent_pb2.DeviceMetrics(
            cpu=sample.cpu or 0.0,
            memory=sample.memory or 0.0,
            xpu=xpu,
            xpu_memory=xpu_memory,
            temperature_c=float("nan") if sample.temperature_c is None else sample.temperature_c,
            power_w=power,
            bandwidth_mbps=self.bandwidth_mbps,
            latency_ms=self.latency_ms,
            probe=f"emulated:{self.profile.name}"
            if self.profile
            else sources.get("xpu_util", sources.get("cpu", "generic")),
        )
        return agent_pb2.AgentMessage(
            heartbeat=agent_pb2.Heartbeat(
                seq=self._hb_seq,
                metrics=metrics,
                free_slots=max(0, self.slots - len(self.running)),
                running_task_ids=sorted(self.running),
                agent_time_unix_ms=int(time.time() * 1000),
                echo_seq=self._echo,
                outbox=len(self.outbox),
                draining=self.draining,
            )
        )

    # ---- messages from the master ------------------------------------------------------

    def _on_message(self, message: agent_pb2.MasterMessage) -> None:
        kind = message.WhichOneof("kind")
        now = time.monotonic()
        if kind == "heartbeat_ack":
            seq = message.heartbeat_ack.seq
            sent = self._hb_sent.pop(seq, None)
            self._echo = seq
            while self._unconfirmed and self._unconfirmed[0][0] <= seq:
                self.outbox.remove(self._unconfirmed.pop(0)[1])
            while self._unacked and self._unacked[0][0] <= seq:
                self._unacked.pop(0)
            if sent is not None:
                rtt = (now - sent) * 1000
                self.latency_ms = rtt if self.latency_ms == 0 else 0.8 * self.latency_ms + 0.2 * rtt
        elif kind == "assignment":
            a = message.assignment
            inbound = _Inbound(a, arrived_at=now)
            if a.payload_inline:  # the payload came with it: no chunk follows
                payload, a.payload = a.payload, b""
                self._received(inbound, payload, now)
            else:
                self._inbound[(a.task_id, a.attempt)] = inbound
        elif kind == "chunk":
            self._on_chunk(message.chunk, now)
        elif kind == "cancel":
            self._cancel(message.cancel.task_id, message.cancel.reason)
        elif kind == "drain" and not self._leave.is_set():
            # an operator's drain: keep running what we have, report it in every heartbeat
            self.draining = message.drain.drain or self._stopping  # an undrain cannot stop a leave
            log.info("%s: %s", "draining" if self.draining else "undrained", message.drain.reason)

    def _on_chunk(self, chunk: agent_pb2.PayloadChunk, now: float) -> None:
        inbound = self._inbound.get((chunk.task_id, chunk.attempt))
        if inbound is None:
            return
        if not inbound.parts:
            inbound.first_at = now
        inbound.parts.append(chunk.data)
        inbound.received += len(chunk.data)
        if not chunk.last:
            return
        del self._inbound[(chunk.task_id, chunk.attempt)]
        self._received(inbound, b"".join(inbound.parts), now)

    def _received(self, inbound: _Inbound, payload: bytes, now: float) -> None:
        """The whole payload is here: check it, then run the task (or queue it for a slot)."""
        receive_ms = (now - inbound.arrived_at) * 1000
        if len(payload) >= MIN_MEASURED_BYTES and now > inbound.arrived_at:
            mbps = len(payload) * 8 / (now - inbound.arrived_at) / 1e6
            self.bandwidth_mbps = (
                mbps if not self.bandwidth_mbps else (0.8 * self.bandwidth_mbps + 0.2 * mbps)
            )
        a = inbound.assignment
        if a.payload_sha256 and hashlib.sha256(payload).hexdigest() != a.payload_sha256:
            self._fail(a, "transfer", "payload checksum mismatch", retryable=True)
            return
        old = self.running.pop(a.task_id, None)
        if old is not None:
            old[1].cancel()
        task = asyncio.create_task(self._execute(a, payload, receive_ms, now))
        self.running[a.task_id] = (a.attempt, task)
        self._send(
            agent_pb2.AgentMessage(
                started=agent_pb2.TaskStarted(
                    task_id=a.task_id, attempt=a.attempt, receive_ms=receive_ms
                )
            )
        )

    def _cancel(self, task_id: str, reason: str, report: bool = True) -> None:
        entry = self.running.pop(task_id, None)
        if not self.running:
            self._idle.set()
        if entry is None:
            return
        attempt, task = entry
        task.cancel()
        log.info("task %s attempt %d cancelled: %s", task_id, attempt, reason)
        if report:
            self._send(
                agent_pb2.AgentMessage(
                    failure=agent_pb2.TaskFailed(
                        task_id=task_id, attempt=attempt, kind="cancelled", message=reason
                    )
                )
            )

    def _fail(
        self, a: agent_pb2.Assignment, kind: str, message: str, retryable: bool = False
    ) -> None:
        self._send(
            agent_pb2.AgentMessage(
                failure=agent_pb2.TaskFailed(
                    task_id=a.task_id,
                    attempt=a.attempt,
                    kind=kind,
                    message=message,
                    retryable=retryable,
                )
            )
        )

    # ---- running a task ----------------------------------------------------------------

    async def _execute(
        self, a: agent_pb2.Assignment, payload: bytes, receive_ms: float, arrived: float
    ) -> None:
        if self._slot_gate is None:
            self._slot_gate = asyncio.Semaphore(self.slots)
        async with self._slot_gate:  # a prefetched task waits here for a slot, payload in hand
            await self._run_in_slot(a, payload, receive_ms, arrived)

    async def _run_in_slot(
        self, a: agent_pb2.Assignment, payload: bytes, receive_ms: float, arrived: float
    ) -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        self.meter.start(start)
        try:
            result: BackendResult = await loop.run_in_executor(
                self.pool, self.backend.run, a.task_type, payload, a.task_id
            )
            paced_ms = 0.0
            if self.profile is not None:
                target = self.profile.sample_ms(self.rng) * self.settings.agent.time_scale / 1000
                remaining = target - (time.monotonic() - start)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    paced_ms = remaining * 1000
        except asyncio.CancelledError:
            raise
        except BadInputError as exc:
            self._fail(a, "bad_input", str(exc))
            return
        except Exception as exc:
            log.exception("task %s failed in the backend", a.task_id)
            self._fail(a, "backend", f"{type(exc).__name__}: {exc}", retryable=True)
            return
        finally:
            self.meter.stop(time.monotonic())
            if self.running.get(a.task_id, (None,))[0] == a.attempt:
                del self.running[a.task_id]
            if not self.running:
                self._idle.set()
        end = time.monotonic()
        timings = common_pb2.BoardTimings(
            receive_ms=receive_ms,
            queue_ms=max(0.0, (start - arrived) * 1000),
            decode_ms=result.timings.get("decode_ms", 0.0),
            inference_ms=result.timings.get("inference_ms", 0.0),
            postprocess_ms=result.timings.get("postprocess_ms", 0.0),
            paced_ms=paced_ms,
            total_ms=(end - arrived) * 1000 + receive_ms,
        )
        detections = [
            common_pb2.Detection(
                class_id=d.class_id,
                class_name=d.class_name,
                x1=d.x1,
                y1=d.y1,
                x2=d.x2,
                y2=d.y2,
                confidence=d.confidence,
            )
            for d in result.detections
        ]
        self._send(
            agent_pb2.AgentMessage(
                result=agent_pb2.TaskDone(
                    task_id=a.task_id,
                    attempt=a.attempt,
                    label=result.label,
                    detections=detections,
                    timings=timings,
                    backend=self.backend.name,
                    payload_bytes=len(payload),
                )
            )
        )


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
