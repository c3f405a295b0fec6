"""The master's end of the agent link (``agent.proto``): the servicer that checks and decodes
what agents send, hands it to ``Master``, and encodes what goes back. Each connected agent's
outgoing stream is an ``AgentSession`` (``session.py``); who may join is the ``AgentRegistry``'s
decision (``registry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator

import grpc

from edgesched.boards import CPU
from edgesched.config import MODEL_FORMATS
from edgesched.core.state import Device, Metrics, clean_fraction
from edgesched.errors import JournalError
from edgesched.kinds import FailureKind
from edgesched.master.errmap import grpc_code, printable
from edgesched.master.master import Master
from edgesched.master.peers import peer_host
from edgesched.master.registry import Refusal
from edgesched.master.results import Done, Failed, Report, Started
from edgesched.master.session import CHUNK_BYTES, AgentSession
from edgesched.v1 import agent_pb2, agent_pb2_grpc
from edgesched.wire import link as wire
from edgesched.wire.results import board_timings_from_pb, detection_from_pb

log = logging.getLogger("edgesched.link")

PROTOCOL_MAJOR = 1
#: 1.1: small payloads ride inline in the assignment; 1.2: batches (assignments to an agent that
#: registered with ≥ 1.2, reports from any agent)
PROTOCOL_MINOR = 2
#: the oldest agent protocol still served: every 1.x agent (1.0 gets its payloads in chunks)
OLDEST_MINOR = 0
AGENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REGISTER_TIMEOUT_S = 10.0
#: board timings outside [0, a day] are faulty reports, kept out like a missing figure
MAX_REPORTED_MS = 86_400_000.0
#: what an agent may send: names (task types, formats, device type...), free text (errors,
#: probe names, static info) and list lengths. A registration beyond them is refused; free
#: text in later messages is cut to its limit, so nothing an agent sends is kept unbounded.
MAX_NAME = 64
MAX_HOSTNAME = 255
MAX_TEXT = 2048
MAX_ITEMS = 256
MAX_INFO_ITEMS = 64  #: static info entries (probe name, SoC, driver versions, ...)
MAX_INFO_TEXT = 256  #: each static info value (kept per device, shown by the API)
MAX_TASK_IDS = 100_000  #: running and finished task ids in a registration
MAX_LABEL = 1024 * 1024  #: a result's label text (the seed's label file)
MAX_DETECTIONS = 10_000  #: detections in one result


def _rank(fmt: str) -> int:
    return MODEL_FORMATS.index(fmt) if fmt in MODEL_FORMATS else len(MODEL_FORMATS)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Free text from an agent, cut to ``limit`` characters (marked, so it is seen to be cut)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _oversized(reg: agent_pb2.Register) -> str:
    """What in a registration is beyond the limits ("" when nothing is)."""
    caps = reg.capabilities
    names = [
        ("device_type", [reg.device_type]),
        ("emulation_profile", [reg.emulation_profile]),
        ("agent_version", [reg.agent_version]),
        ("task type", list(caps.task_types)),
        ("model format", list(caps.model_formats)),
        ("backend", list(caps.backends)),
        ("sub-device", [s.name for s in caps.sub_devices] + [s.kind for s in caps.sub_devices]),
        ("artefact", [x for a in caps.artefacts for x in (a.task_type, a.format, a.target)]),
        ("static_info key", list(reg.static_info)),
    ]
    if len(reg.hostname) > MAX_HOSTNAME:
        return f"hostname of {len(reg.hostname)} characters (at most {MAX_HOSTNAME})"
    for what, values in names:
        for value in values:
            if len(value) > MAX_NAME:
                return f"{what} of {len(value)} characters (at most {MAX_NAME})"
    lists = [
        ("task types", len(caps.task_types)),
        ("artefacts", len(caps.artefacts)),
        ("sub-devices", len(caps.sub_devices)),
        ("model formats", len(caps.model_formats)),
        ("backends", len(caps.backends)),
    ]
    for what, count in lists:
        if count > MAX_ITEMS:
            return f"{count} {what} (at most {MAX_ITEMS})"
    if len(reg.static_info) > MAX_INFO_ITEMS:
        return f"{len(reg.static_info)} static_info entries (at most {MAX_INFO_ITEMS})"
    for what, ids in (("running", reg.running_task_ids), ("finished", reg.finished_task_ids)):
        if len(ids) > MAX_TASK_IDS:
            return f"{len(ids)} {what} task ids (at most {MAX_TASK_IDS})"
        if any(len(task_id) > MAX_NAME for task_id in ids):
            return f"a {what} task id over {MAX_NAME} characters"
    return ""


def _oversized_result(r: agent_pb2.TaskDone) -> str:
    """Why a result is too large to keep ("" when it is not)."""
    if len(r.label) > MAX_LABEL:
        return f"result too large: a label of {len(r.label)} characters (at most {MAX_LABEL})"
    if len(r.detections) > MAX_DETECTIONS:
        return f"result too large: {len(r.detections)} detections (at most {MAX_DETECTIONS})"
    return ""


def _report(r: wire.Report) -> Report:
    """An agent's report, checked: free text cut to its limit, an oversized result turned into
    a backend failure (not cut: a cut result would be a wrong one; the task runs again)."""
    if isinstance(r, agent_pb2.TaskStarted):
        return Started(r.task_id, r.attempt)
    if isinstance(r, agent_pb2.TaskFailed):
        return Failed(r.task_id, r.attempt, clip(r.kind, MAX_NAME), clip(r.message))
    oversized = _oversized_result(r)
    if oversized:
        return Failed(r.task_id, r.attempt, FailureKind.BACKEND, oversized)
    detections = [detection_from_pb(d, MAX_NAME) for d in r.detections]
    board = board_timings_from_pb(r.timings, MAX_REPORTED_MS)
    return Done(r.task_id, r.attempt, r.label, detections, board)


def _metrics(m: agent_pb2.DeviceMetrics) -> Metrics:
    def finite(value: float, default: float) -> float:
        return value if math.isfinite(value) else default

    def fraction_or_unknown(value: float) -> float:
        # negative means "this board has no such figure"; above 1 is a faulty probe
        return -1.0 if not math.isfinite(value) or value < 0 else min(1.0, value)

    return Metrics(
        cpu=clean_fraction(m.cpu),
        memory=clean_fraction(m.memory),
        xpu=fraction_or_unknown(m.xpu),
        xpu_memory=fraction_or_unknown(m.xpu_memory),
        temperature_c=m.temperature_c,
        power_w=m.power_w,
        bandwidth_mbps=max(0.0, finite(m.bandwidth_mbps, 0.0)),
        latency_ms=max(0.0, finite(m.latency_ms, 0.0)),
        probe=clip(m.probe, MAX_NAME),
    )


class AgentLinkServicer(agent_pb2_grpc.AgentLinkServicer):
    """Speaks the agent link (``agent.proto``): checks and decodes what an agent sends, hands
    it to ``Master`` (and its ``AgentRegistry``), encodes what goes back. Owns nothing but the
    streams; it may not change the scheduling core, the journal or the registry itself."""

    def __init__(self, master: Master) -> None:
        self.master = master

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.MasterMessage]:
        try:
            first = await asyncio.wait_for(anext(request_iterator), REGISTER_TIMEOUT_S)
        except (TimeoutError, StopAsyncIteration):
            return
        try:
            identity = self._check(first) or await self._authenticate(first.register)
        except JournalError as exc:  # a full disk: the agent tries again later
            await context.abort(grpc_code(exc), printable(str(exc)))
            return
        if isinstance(identity, agent_pb2.Refused):
            log.warning("agent refused from %s: %s", context.peer(), identity.message)
            yield agent_pb2.MasterMessage(refused=identity)
            return
        agent_id, credential = identity
        session, reply = self._admit(first.register, context.peer(), agent_id, credential)
        yield agent_pb2.MasterMessage(registered=reply)
        reader = asyncio.create_task(self._read(request_iterator, session))
        reader.add_done_callback(lambda _: session.close("link closed"))
        try:
            async for message in session.outgoing():
                yield message
        finally:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a broken stream ends the session, nothing more
                log.debug("agent %s stream ended: %r", session.device_id, exc)
            self._gone(session)

    def _check(self, first: agent_pb2.AgentMessage) -> agent_pb2.Refused | None:
        if not first.HasField("register"):
            return agent_pb2.Refused(code="protocol", message="the first message must register")
        reg = first.register
        if reg.protocol.major != PROTOCOL_MAJOR or reg.protocol.minor < OLDEST_MINOR:
            return agent_pb2.Refused(
                code="version",
                message=f"protocol {reg.protocol.major}.{reg.protocol.minor} not supported; "
                f"this master speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
            )
        if reg.agent_id and not AGENT_ID.match(reg.agent_id):
            return agent_pb2.Refused(
                code="protocol", message="agent id must be 1-64 of [A-Za-z0-9._-]"
            )
        oversized = _oversized(reg)
        if oversized:
            return agent_pb2.Refused(code="too_large", message=f"registration refused: {oversized}")
        return None

    async def _authenticate(self, reg: agent_pb2.Register) -> tuple[str, str] | agent_pb2.Refused:
        """(agent id, credential to hand back), or the refusal (the registry decides)."""
        identity = await self.master.registry.authenticate(
            reg.agent_id, reg.credential, reg.join_token, reg.device_type
        )
        if isinstance(identity, Refusal):
            return agent_pb2.Refused(code=identity.code, message=identity.message)
        return identity

    def _device(self, reg: agent_pb2.Register, peer: str, agent_id: str) -> Device:
        """The device a registration describes, its claimed slots bounded by the registry."""
        caps = reg.capabilities
        claimed = caps.slots or sum(s.slots for s in caps.sub_devices) or 1
        try:
            cpu_count = int(reg.static_info.get("generic.cpu_count", "0"))
        except ValueError:
            cpu_count = 0
        slots = self.master.registry.slots(agent_id, claimed, reg.device_type or CPU, cpu_count)
        info = {key: clip(value, MAX_INFO_TEXT) for key, value in reg.static_info.items()}
        if reg.emulated:
            info.setdefault("emulation_profile", reg.emulation_profile)
            info.setdefault("time_scale", f"{reg.time_scale:g}")
        formats: dict[str, str] = {}
        for artefact in caps.artefacts:  # the best format it holds per task type
            held = formats.get(artefact.task_type)
            if held is None or _rank(artefact.format) < _rank(held):
                formats[artefact.task_type] = artefact.format
        return Device(
            id=agent_id,
            device_type=reg.device_type or CPU,
            slots=slots,
            task_types=frozenset(caps.task_types),
            formats=formats,
            emulated=reg.emulated,
            hostname=reg.hostname,
            address=peer_host(peer),
            session=reg.session,
            info=info,
        )

    def _admit(
        self, reg: agent_pb2.Register, peer: str, agent_id: str, credential: str
    ) -> tuple[AgentSession, agent_pb2.RegisterReply]:
        master = self.master
        device = self._device(reg, peer, agent_id)
        session = AgentSession(agent_id, peer)
        session.cached = master.cached_payload
        session.read = master.read_payload
        session.inline_payloads = (reg.protocol.major, reg.protocol.minor) >= (1, 1)
        session.batches = wire.batched(reg.protocol)
        session.on_unreadable = lambda task_id, attempt, msg: master.task_failed(
            agent_id, task_id, attempt, FailureKind.BAD_INPUT, msg
        )
        reconciled = master.agent_joined(
            device, session, list(reg.running_task_ids), list(reg.finished_task_ids)
        )
        reply = agent_pb2.RegisterReply(
            agent_id=agent_id,
            credential=credential,
            heartbeat_interval_ms=int(master.settings.scheduling.heartbeat_interval_s * 1000),
            protocol=agent_pb2.ProtocolVersion(major=PROTOCOL_MAJOR, minor=PROTOCOL_MINOR),
            keep_task_ids=reconciled.keep,
            drop_task_ids=reconciled.drop,
            max_chunk_bytes=CHUNK_BYTES,
        )
        return session, reply

    async def _read(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], session: AgentSession
    ) -> None:
        master, device_id = self.master, session.device_id
        async for message in request_iterator:
            if session.closed.is_set():
                return
            kind = message.WhichOneof("kind")
            session.messages_received += 1
            master.agent_seen(device_id)
            if kind == "heartbeat":
                handling_started = time.perf_counter()
                hb = message.heartbeat
                session.send_control(
                    agent_pb2.MasterMessage(
                        heartbeat_ack=agent_pb2.HeartbeatAck(
                            seq=hb.seq, master_time_unix_ms=master.clock.wall_ms()
                        )
                    )
                )
                master.agent_heartbeat(device_id, _metrics(hb.metrics), hb.draining)
                master.metrics.heartbeat.observe(time.perf_counter() - handling_started)
            elif kind in ("started", "result", "failure", "reports"):
                # one report (any 1.x agent) or a 1.2 batch: one dispatch after all of them
                reports = [_report(r) for r in wire.reports_of(message)]
                if len(reports) == 1:
                    self._one(device_id, reports[0])
                elif reports:  # an empty batch carries nothing to act on
                    master.task_reports(device_id, reports)
            elif kind == "goodbye":
                log.info("agent %s left: %s", device_id, clip(message.goodbye.reason, MAX_NAME))
                master.agent_left(device_id)
                return

    def _one(self, device_id: str, report: Report) -> None:
        master = self.master
        r = report
        if isinstance(r, Started):
            master.task_started(device_id, r.task_id, r.attempt)
        elif isinstance(r, Done):
            master.task_done(device_id, r.task_id, r.attempt, r.label, r.detections, r.board)
        else:
            master.task_failed(device_id, r.task_id, r.attempt, r.kind, r.message)

    def _gone(self, session: AgentSession) -> None:
        self.master.agent_gone(session)
