"""The scale benchmark's figures as a table for a person (``--json`` prints them whole)."""

from __future__ import annotations

from typing import Any

from edgesched.tools.bench.scale.figures import CPU_TARGET_PERCENT, DECISION_TARGET_MS


def table(r: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    g, b, h = r["gates"], r["bytes"], r["heartbeats"]
    wire = b["wire_per_s_per_agent"] or {}
    lines = [
        f"scale: {r['agents_joined']}/{r['agents']} agents joined ({r['devices_online']} online "
        f"on the master) in {r['join_s']:.1f} s, {r['processes']} agent processes, heartbeat "
        f"{r['heartbeat_interval_s']:g} s, window {r['window_s']:g} s",
        f"{'master CPU':<28}{r['master_cpu_percent']:>10} %   target ≤ "
        f"{CPU_TARGET_PERCENT:g} % of one core: {mark(g['master_cpu'])}",
        f"{'master RSS':<28}{r['master_rss_mib']:>10} MiB",
        f"{'heartbeat handling p99':<28}{r['heartbeat_handling_p99_ms']:>10} ms  "
        f"(p50 {h['handling_p50_ms']} ms; agent round trip p99 {h['round_trip_p99_ms']} ms)",
        f"{'decision p99 (worst)':<28}{r['decision_p99_ms']:>10} ms  target ≤ "
        f"{DECISION_TARGET_MS:g} ms: {mark(g['decision_p99'])}",
        f"{'heartbeat bytes/s per agent':<28}{r['heartbeat_bytes_per_s_per_agent']:>10} B/s "
        f"(protobuf {b['proto_per_s_per_agent']}; wire {wire.get('total', 'n/a')})",
    ]
    t = r.get("tasks_under_load")
    if t:
        lines.append(
            f"{'tasks while heartbeating':<28}{t['tasks_per_s']:>10} tasks/s over "
            f"{t['seconds']:g} s; heartbeat handling p99 {t['heartbeat_handling_p99_ms']} ms; "
            f"master CPU {t['master_cpu_percent']} %"
        )
    for name, s in r["decisions"]["strategies"].items():
        lines.append(
            f"  {name:<12} burst p99 {s['burst']['p99_ms']} ms, arrival p99 "
            f"{s['arrival']['p99_ms']} ms"
        )
    lines.append(
        f"agents: {'all joined' if g['all_agents_joined'] else 'NOT ALL JOINED'}, credential "
        f"rejoins {r['credential_rejoins']['ok']}/{r['credential_rejoins']['tried']}; load "
        f"generator {r['load_generator']['workers_cpu_percent']} % CPU; ran in {r['runtime_s']} s"
    )
    return "\n".join(lines)
