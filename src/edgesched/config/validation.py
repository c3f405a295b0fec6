"""Checking the settings once loaded: ranges, combinations, names; reads' token rule."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import fields

from edgesched.config.settings import (
    MODEL_FORMATS,
    MasterSettings,
    SchedulingSettings,
    Settings,
)
from edgesched.errors import ConfigError
from edgesched.masters import parse_masters

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
    # "a,b,c": several masters, one leader (the same master_port on each)
    parse_masters(settings.agent.master_ip, settings.agent.master_port, "agent.master_ip")
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
    for key in (
        "retry_backoff_s",
        "retry_backoff_cap_s",
        "stall_after_s",
        "hedge_straggler_factor",
        "hedge_floor_s",
        *_weights(s),
    ):
        value = getattr(s, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"scheduling.{key} must be a number ≥ 0, not {value!r}")
    if not (math.isfinite(s.hedge_budget) and 0 <= s.hedge_budget <= 1):
        raise ConfigError(f"scheduling.hedge_budget must be in [0, 1], not {s.hedge_budget!r}")
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
    if not (math.isfinite(m.payload_segment_mb) and m.payload_segment_mb > 0):
        raise ConfigError(
            f"master.payload_segment_mb must be a positive number, not {m.payload_segment_mb!r}"
        )
    for key in ("max_slots_per_device", "cpu_slots_per_core", "max_agents", "max_joins_per_minute"):
        if getattr(m, key) < 1:
            raise ConfigError(f"master.{key} must be at least 1, not {getattr(m, key)}")
    if m.journal and not m.journal.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"master.journal must be empty (SQLite in data_dir) or a postgresql:// URL, "
            f"not {m.journal.split('@')[-1]!r}"
        )
    for key in ("lease_s", "lease_renew_s"):
        value = getattr(m, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"master.{key} must be a positive number, not {value!r}")
    if m.lease_renew_s * 2 > m.lease_s:
        raise ConfigError(
            f"master.lease_renew_s ({m.lease_renew_s}) must be at most half of master.lease_s "
            f"({m.lease_s}): the leader renews at least twice per lease"
        )
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
    a = settings.agent
    if not (math.isfinite(a.slow_factor) and a.slow_factor > 0):
        raise ConfigError(f"agent.slow_factor must be a positive number, not {a.slow_factor!r}")
    for key in ("slow_after_s", "slow_for_s"):
        value = getattr(a, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"agent.{key} must be a number ≥ 0, not {value!r}")
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
