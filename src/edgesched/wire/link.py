"""The agent link's messages (``agent.proto``): what an agent (or the simulated fleet of
``bench scale``) sends, the master's drain order, and the framing both ends share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Union

from edgesched.inference.labels import Detection
from edgesched.v1 import agent_pb2
from edgesched.wire.results import board_timings_pb, detection_pb

__all__ = [
    "REPORT_KINDS",
    "AgentMessage",
    "Artefact",
    "ArtefactLike",
    "Assignment",
    "MasterMessage",
    "PayloadChunk",
    "ProtocolVersion",
    "RegisterReply",
    "Report",
    "SubDevice",
    "assignments_of",
    "batched",
    "decode_agent_message",
    "drain",
    "encode",
    "goodbye",
    "heartbeat",
    "kind_of",
    "protocol",
    "register",
    "report_batch",
    "reports_of",
    "task_done",
    "task_failed",
    "task_started",
]

# The message classes, for annotations: code outside wire/ holds them, never builds them.
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
Assignment = agent_pb2.Assignment
PayloadChunk = agent_pb2.PayloadChunk
RegisterReply = agent_pb2.RegisterReply
ProtocolVersion = agent_pb2.ProtocolVersion
#: one attempt report: started, result or failure (alone, or one of a 1.2 ``ReportBatch``)
Report = Union[agent_pb2.TaskStarted, agent_pb2.TaskDone, agent_pb2.TaskFailed]

#: the agent → master messages a 1.2 ``ReportBatch`` may carry
REPORT_KINDS = ("started", "result", "failure")


@dataclass(frozen=True)
class Artefact:
    """A model file, as a registration advertises it."""

    task_type: str
    format: str
    target: str = ""
    sha256: str = ""
    backend: str = ""


@dataclass(frozen=True)
class SubDevice:
    """An NPU core, GPU or chip of a board, and the slots it gives."""

    name: str
    kind: str
    slots: int


class ArtefactLike(Protocol):
    """A model file an agent holds (``agent.backends.HeldArtefact``, ``Artefact``)."""

    @property
    def task_type(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def backend(self) -> str: ...


def protocol(major: int, minor: int) -> agent_pb2.ProtocolVersion:
    return agent_pb2.ProtocolVersion(major=major, minor=minor)


def kind_of(message: AgentMessage | MasterMessage) -> str:
    """Which message of the link's ``oneof kind`` this is ("" when none is set)."""
    return message.WhichOneof("kind") or ""


def batched(version: ProtocolVersion) -> bool:
    """Whether a peer of this version takes batches (protocol ≥ 1.2)."""
    return (version.major, version.minor) >= (1, 2)


def reports_of(message: AgentMessage) -> list[Report]:
    """The attempt reports a message carries, in order: one (a started, result or failure
    message, any 1.x agent), many (a 1.2 ``ReportBatch``), or none (any other message)."""
    kind = kind_of(message)
    if kind == "reports":
        found: list[Report] = []
        for report in message.reports.reports:
            inner = report.WhichOneof("kind")
            if inner is not None:  # an empty entry carries nothing: skipped
                found.append(getattr(report, inner))
        return found
    if kind in REPORT_KINDS:
        return [getattr(message, kind)]
    return []


def report_batch(messages: Sequence[AgentMessage]) -> AgentMessage:
    """One 1.2 message carrying the reports ``messages`` hold (each a started, result or
    failure message, as ``task_started``/``task_done``/``task_failed`` build them), in order."""
    out = agent_pb2.AgentMessage()
    reports = out.reports.reports
    for message in messages:
        kind = kind_of(message)
        if kind not in REPORT_KINDS:
            raise ValueError(f"a report batch carries reports, not {kind or 'an empty message'}")
        getattr(reports.add(), kind).CopyFrom(getattr(message, kind))
    return out


def assignments_of(message: MasterMessage) -> list[Assignment]:
    """The assignments a master message carries: one (``assignment``), many (a 1.2
    ``AssignmentBatch``) or none."""
    kind = kind_of(message)
    if kind == "assignments":
        return list(message.assignments.assignments)
    if kind == "assignment":
        return [message.assignment]
    return []


def encode(message: AgentMessage) -> bytes:
    return message.SerializeToString()


def decode_agent_message(data: bytes) -> AgentMessage:
    """Raises on bytes that are no AgentMessage (protobuf's DecodeError)."""
    message = agent_pb2.AgentMessage()
    message.ParseFromString(data)
    return message


def register(
    *,
    protocol: agent_pb2.ProtocolVersion,
    join_token: str,
    agent_id: str,
    credential: str,
    hostname: str,
    device_type: str,
    task_types: Iterable[str],
    artefacts: Iterable[ArtefactLike],
    model_formats: Iterable[str],
    sub_devices: Iterable[SubDevice],
    slots: int,
    backends: Iterable[str],
    agent_version: str,
    static_info: Mapping[str, str],
    session: int,
    emulated: bool = False,
    emulation_profile: str = "",
    time_scale: float = 0.0,
    running_task_ids: Sequence[str] = (),
    finished_task_ids: Sequence[str] = (),
) -> AgentMessage:
    """The Register message, the first on every link."""
    caps = agent_pb2.Capabilities(
        task_types=list(task_types),
        artefacts=[
            agent_pb2.ModelArtefact(
                task_type=h.task_type,
                format=h.format,
                target=h.target,
                sha256=h.sha256,
                backend=h.backend,
            )
            for h in artefacts
        ],
        model_formats=list(model_formats),
        sub_devices=[
            agent_pb2.SubDevice(name=s.name, kind=s.kind, slots=s.slots) for s in sub_devices
        ],
        slots=slots,
        backends=list(backends),
    )
    return agent_pb2.AgentMessage(
        register=agent_pb2.Register(
            protocol=protocol,
            join_token=join_token,
            agent_id=agent_id,
            credential=credential,
            hostname=hostname,
            device_type=device_type,
            emulated=emulated,
            emulation_profile=emulation_profile,
            time_scale=time_scale,
            capabilities=caps,
            running_task_ids=list(running_task_ids),
            finished_task_ids=list(finished_task_ids),
            agent_version=agent_version,
            static_info=dict(static_info),
            session=session,
        )
    )


def heartbeat(
    *,
    seq: int,
    cpu: float,
    memory: float,
    xpu: float,
    xpu_memory: float,
    temperature_c: float,
    power_w: float,
    bandwidth_mbps: float,
    latency_ms: float,
    probe: str,
    free_slots: int,
    agent_time_unix_ms: int,
    echo_seq: int,
    running_task_ids: Sequence[str] = (),
    outbox: int = 0,
    draining: bool = False,
) -> AgentMessage:
    """A heartbeat: the board's figures (negative or NaN: this board has no such figure)."""
    metrics = agent_pb2.DeviceMetrics(
        cpu=cpu,
        memory=memory,
        xpu=xpu,
        xpu_memory=xpu_memory,
        temperature_c=temperature_c,
        power_w=power_w,
        bandwidth_mbps=bandwidth_mbps,
        latency_ms=latency_ms,
        probe=probe,
    )
    return agent_pb2.AgentMessage(
        heartbeat=agent_pb2.Heartbeat(
            seq=seq,
            metrics=metrics,
            free_slots=free_slots,
            running_task_ids=list(running_task_ids),
            agent_time_unix_ms=agent_time_unix_ms,
            echo_seq=echo_seq,
            outbox=outbox,
            draining=draining,
        )
    )


def task_started(task_id: str, attempt: int, receive_ms: float) -> AgentMessage:
    return agent_pb2.AgentMessage(
        started=agent_pb2.TaskStarted(task_id=task_id, attempt=attempt, receive_ms=receive_ms)
    )


def task_failed(
    task_id: str, attempt: int, kind: str, message: str, retryable: bool = False
) -> AgentMessage:
    """``kind``: a ``FailureKind`` (its string value is what travels)."""
    return agent_pb2.AgentMessage(
        failure=agent_pb2.TaskFailed(
            task_id=task_id,
            attempt=attempt,
            kind=str(kind),
            message=message,
            retryable=retryable,
        )
    )


def task_done(
    *,
    task_id: str,
    attempt: int,
    label: str,
    detections: Iterable[Detection],
    timings: Mapping[str, float],
    backend: str,
    payload_bytes: int,
) -> AgentMessage:
    """The result: the backend's label and detections, the board's timings (``BOARD_FIELDS``)."""
    return agent_pb2.AgentMessage(
        result=agent_pb2.TaskDone(
            task_id=task_id,
            attempt=attempt,
            label=label,
            detections=[detection_pb(d) for d in detections],
            timings=board_timings_pb(timings),
            backend=backend,
            payload_bytes=payload_bytes,
        )
    )


def goodbye(reason: str) -> AgentMessage:
    return agent_pb2.AgentMessage(goodbye=agent_pb2.Goodbye(reason=reason))


def drain(on: bool, reason: str) -> MasterMessage:
    """The master's order to stop (``on``) or resume taking tasks."""
    return agent_pb2.MasterMessage(drain=agent_pb2.Drain(drain=on, reason=reason))
