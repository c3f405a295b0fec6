"""``edgesched bench failover``: from an agent's death (SIGKILL) to its tasks running elsewhere.

Two emulated agents with the sleep backend (A and B) join a master. B is drained, so the tasks
submitted go to A; once A runs them B is undrained and A is killed with SIGKILL. The benchmark
then polls ``GET /api/v1/tasks/{id}`` for each of A's tasks until it is assigned to B and
running there, and reports how long after the kill each step was seen, with the settings in
force. With the defaults (A's link drops at once, so A is suspect at once) the wait is the dead
grace, ``scheduling.dead_grace_s`` (30 s), plus up to one tick of the master (0.1 s).

``--signal stop`` freezes A (SIGSTOP) instead: its TCP connection stays open, as with a board
that hangs or loses power behind a NAT, so the master must notice the silence first (no
heartbeat for ``heartbeat_interval_s × suspect_after_beats``) before the grace starts.

``--master`` kills the leading master of three on PostgreSQL instead (``master_failover``).

``--grace-s``, ``--heartbeat-s`` and ``--suspect-after-beats`` set the master's
``EDGESCHED_SCHEDULING_*`` environment variables (the master has no flags for them).

By default one command measures both signals with hedging off and on (``--signal``,
``--hedging``), each run on a fresh cluster: with hedging on, A's tasks get a second attempt on
B as soon as A is suspect, so "running elsewhere" is the hedge running on B (A's attempt stays
valid until the grace ends). The JSON has one entry per run in ``runs`` (each with the fields a
single run always had, and ``hedging``), the targets, and a side-by-side table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import click
import grpc
import httpx

from edgesched.boards import BOARD_FAMILIES, RK3588
from edgesched.client.send import task_stub
from edgesched.config import load_settings
from edgesched.core.state import TaskState
from edgesched.errors import EdgeschedError
from edgesched.kinds import FailureKind
from edgesched.tools.bench import hedging
from edgesched.tools.bench.deadline import BenchError, Deadline
from edgesched.tools.bench.gateway import gateway, http, wait_devices
from edgesched.tools.bench.output import emit, progress, run_options
from edgesched.tools.bench.payloads import small_jpeg
from edgesched.tools.bench.sampling import pid_of
from edgesched.tools.testing.lifecycle import local_cluster, work_dir
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.wire import tasks

# targets of issue 17 (defaults, this machine), printed beside the figures
TARGET_S = {"SIGKILL": 1.0, "SIGSTOP": 7.0}
SIGNALS = {"kill": ["kill"], "stop": ["stop"], "both": ["kill", "stop"]}

RUNNING_STATES = (TaskState.ASSIGNED.value, TaskState.RUNNING.value)
FINAL_STATES = (TaskState.DONE.value, TaskState.DEAD.value, TaskState.CANCELLED.value)


def master_env(
    grace_s: float | None, heartbeat_s: float | None, suspect_after_beats: int | None
) -> dict[str, str]:
    env: dict[str, str] = {}
    if grace_s is not None:
        env["EDGESCHED_SCHEDULING_DEAD_GRACE_S"] = repr(grace_s)
    if heartbeat_s is not None:
        env["EDGESCHED_SCHEDULING_HEARTBEAT_INTERVAL_S"] = repr(heartbeat_s)
    if suspect_after_beats is not None:
        env["EDGESCHED_SCHEDULING_SUSPECT_AFTER_BEATS"] = str(suspect_after_beats)
    return env


def settings_in_force(env: dict[str, str]) -> dict[str, Any]:
    """The scheduling settings the master reads (defaults, then the environment it inherits)."""
    from edgesched.master.server import TICK_S

    s = load_settings(None, env={**os.environ, **env}).scheduling
    return {
        **hedging.in_force(s),
        "dead_grace_s": s.dead_grace_s,
        "heartbeat_interval_s": s.heartbeat_interval_s,
        "suspect_after_beats": s.suspect_after_beats,
        "silent_before_suspect_s": s.heartbeat_interval_s * s.suspect_after_beats,
        "master_tick_s": TICK_S,
        "task_deadline_s": s.task_deadline_s,
        "environment": env,
    }


def agent_id(cluster: LocalCluster, name: str, deadline: Deadline) -> str:
    """The id the master gave agent ``name`` (it saves it once the master answered)."""
    path = cluster.root / name / "agent.json"
    until = time.monotonic() + deadline.cap(10, f"reading the id of {name}")
    while True:
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["agent_id"])
        except (OSError, ValueError, KeyError) as exc:
            if time.monotonic() > until:
                raise BenchError(f"cannot read the id of {name} from {path}: {exc}") from exc
        time.sleep(0.05)


def _task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = http(api, "GET", f"/api/v1/tasks/{task_id}")
    return task


def _device_states(api: httpx.Client) -> dict[str, str]:
    return {d["id"]: d["state"] for d in http(api, "GET", "/api/v1/devices")["devices"]}


def _submit(cluster: LocalCluster, count: int, deadline: Deadline) -> list[str]:
    payload = small_jpeg((30, 90, 200))
    client_id = f"failover-{uuid.uuid4().hex[:8]}"
    metadata = (("authorization", f"Bearer {cluster.api_token}"),)
    ids = []
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = task_stub(channel)
        for i in range(count):
            reply = stub.Submit(
                tasks.submit_request(
                    client_id=client_id,
                    idempotency_key=f"failover-{i}",
                    task_type="layout",
                    filename=f"f{i}.jpg",
                    payload=payload,
                ),
                timeout=deadline.cap(30, "submitting"),
                metadata=metadata,
            )
            ids.append(reply.task_id)
    return ids


def _wait_on_a(
    api: httpx.Client,
    ids: list[str],
    device_a: str,
    want: int,
    deadline: Deadline,
    poll_s: float,
) -> dict[str, dict[str, Any]]:
    """Waits until ``want`` of the tasks run on A; returns those tasks as seen last."""
    until = time.monotonic() + deadline.cap(60, "waiting for A to run the tasks")
    while True:
        rows = {task_id: _task(api, task_id) for task_id in ids}
        on_a = {
            t: r
            for t, r in rows.items()
            if r["device_id"] == device_a and r["state"] == TaskState.RUNNING
        }
        if len(on_a) >= want:
            return on_a
        ended = [t for t, r in rows.items() if r["state"] in FINAL_STATES]
        if ended:
            raise BenchError(
                f"{len(ended)} tasks ended before A ran them all: raise --time-scale "
                f"(first: {rows[ended[0]]['state']} {rows[ended[0]]['error']})"
            )
        if time.monotonic() > until:
            raise BenchError(f"only {len(on_a)} of {want} tasks running on A after 60 s")
        time.sleep(poll_s)


def run_failover(
    root: Path,
    deadline: Deadline,
    profile: str,
    time_scale: float,
    tasks: int,
    env: dict[str, str],
    poll_s: float,
    wait_done: bool,
    how: str = "kill",
) -> dict[str, Any]:
    settings = settings_in_force(env)
    agent_args = ["--backend", "sleep", "--emulate", profile, "--time-scale", repr(time_scale)]
    with local_cluster(root) as cluster, contextlib.ExitStack() as stack:
        cluster.start_master(timeout=deadline.cap(60, "starting the master"), env=env)
        api = stack.enter_context(gateway(cluster, timeout=5.0))
        cluster.start_agent("agent-a", agent_args)
        cluster.start_agent("agent-b", agent_args)
        devices = {d["id"]: d for d in wait_devices(cluster, 2, deadline, timeout=60)}
        device_a = agent_id(cluster, "agent-a", deadline)
        device_b = agent_id(cluster, "agent-b", deadline)
        if {device_a, device_b} != set(devices):
            raise BenchError(f"the devices online {sorted(devices)} are not A and B")
        slots_a = int(devices[device_a]["slots"])
        count = tasks or slots_a
        http(api, "POST", f"/api/v1/devices/{device_b}/drain")
        ids = _submit(cluster, count, deadline)
        before = _wait_on_a(api, ids, device_a, min(count, slots_a), deadline, poll_s)
        http(api, "POST", f"/api/v1/devices/{device_b}/undrain")
        pid_a = pid_of(cluster, "agent-a")
        # A's tasks: those running on A an instant before it dies (read before, not after: with
        # hedging the master moves a dead link's tasks at once, and the row then names B)
        a_tasks = {
            t: r
            for t, r in ((t, _task(api, t)) for t in before)
            if r["device_id"] == device_a and r["state"] in RUNNING_STATES
        }
        if not a_tasks:
            raise BenchError("A's tasks ended before it was killed: raise --time-scale")
        # the moment of death: the whole process group of A, with no chance to say goodbye
        kill_wall_ms = time.time() * 1000
        killed_at = time.monotonic()
        if how == "kill":
            os.killpg(pid_a, signal.SIGKILL)
            cluster.procs["agent-a"].wait(timeout=deadline.cap(10, "reaping A"))
        else:
            os.killpg(pid_a, signal.SIGSTOP)
            stack.callback(_kill_group, pid_a)  # a stopped process ignores SIGTERM
        expected = settings["dead_grace_s"]
        if how == "stop":
            expected += settings["silent_before_suspect_s"]
        watch_s = expected + settings["silent_before_suspect_s"] + 60.0
        until = time.monotonic() + deadline.cap(watch_s, "watching the failover")
        seen: dict[str, dict[str, Any]] = {
            t: {"task_id": t, "attempt_on_a": r["attempts"]} for t, r in a_tasks.items()
        }
        a_seen: dict[str, float] = {}
        while True:
            now = time.monotonic() - killed_at
            state_a = _device_states(api).get(device_a, "gone")
            a_seen.setdefault(state_a, round(now, 3))
            for task_id, info in seen.items():
                if "running_s" in info:
                    continue
                row = _task(api, task_id)
                now = time.monotonic() - killed_at
                if row["device_id"] == device_b and row["state"] in RUNNING_STATES:
                    info.setdefault("assigned_s", round(now, 3))
                    info["attempt_on_b"] = row["attempts"]
                    if row["state"] == TaskState.RUNNING:
                        info["running_s"] = round(now, 3)
                        info["requeued_s"] = _requeued_s(row, device_a, kill_wall_ms)
                elif row["state"] in FINAL_STATES:
                    info["ended"] = row["state"]
                    info["running_s"] = None  # never seen running on B
                    info["error"] = row["error"]
            if all("running_s" in i for i in seen.values()):
                break
            if time.monotonic() > until:
                missing = sum(1 for i in seen.values() if "running_s" not in i)
                raise BenchError(
                    f"{missing} of A's {len(seen)} tasks not running on B {watch_s:g} s after the "
                    f"kill (A is {state_a})"
                )
            time.sleep(poll_s)
        done_on_b = all_done_s = None
        if wait_done:
            done_on_b = _wait_done(api, list(seen), device_b, deadline, poll_s)
            all_done_s = round(time.monotonic() - killed_at, 3)
        moved = [i for i in seen.values() if i.get("running_s") is not None]
        return {
            "benchmark": "failover",
            "settings": settings,
            "signal": "SIGKILL" if how == "kill" else "SIGSTOP",
            "profile": profile,
            "time_scale": time_scale,
            "slots_a": slots_a,
            "tasks_submitted": count,
            "tasks_on_a": len(seen),
            "tasks_moved": len(moved),
            "device_a": device_a,
            "device_b": device_b,
            "poll_s": poll_s,
            "a_state_first_seen_s": a_seen,
            "tasks": list(seen.values()),
            "max_assigned_s": max((i["assigned_s"] for i in moved), default=None),
            "max_running_s": max((i["running_s"] for i in moved), default=None),
            "max_requeued_s": max(
                (i["requeued_s"] for i in moved if i.get("requeued_s") is not None), default=None
            ),
            "expected_s": expected,
            "done_on_b": done_on_b,
            "all_done_s": all_done_s,  #: from the kill until every one of A's tasks ended
            "hedging": hedging.label(settings.get("hedging", False)),
        }


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _requeued_s(row: dict[str, Any], device_a: str, kill_wall_ms: float) -> float | None:
    """When the master gave up A's attempt, from its own error record (wall clock, ms)."""
    lost = [
        e
        for e in row.get("errors") or []
        if e.get("device_id") == device_a and e.get("kind") == FailureKind.DEVICE_LOST
    ]
    if not lost:
        return None
    return round((float(lost[-1]["at_unix_ms"]) - kill_wall_ms) / 1000, 3)


def _wait_done(
    api: httpx.Client, ids: list[str], device_b: str, deadline: Deadline, poll_s: float
) -> int:
    """How many of ``ids`` ended done on B (waits up to 120 s for all of them to end; with
    hedging, A's attempt may be settled later than B's result, which is what counts)."""
    until = time.monotonic() + deadline.cap(120, "waiting for the moved tasks to finish")
    while True:
        rows = [_task(api, t) for t in ids]
        if all(r["state"] in FINAL_STATES for r in rows) or time.monotonic() > until:
            return sum(
                1 for r in rows if r["state"] == TaskState.DONE and r["device_id"] == device_b
            )
        time.sleep(poll_s)


@click.command("failover")
@click.option(
    "--emulate",
    "profile",
    default=RK3588,
    show_default=True,
    type=click.Choice(list(BOARD_FAMILIES)),
    help="the board both agents emulate (rk3588: 3 slots, so A holds 3 tasks)",
)
@click.option(
    "--time-scale",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="stretches emulated task times (rk3588: 40 ms × 100 ≈ 4 s a task)",
)
@click.option(
    "--tasks",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="tasks submitted while B is drained; 0 = as many as A has slots",
)
@click.option(
    "--signal",
    "how",
    default="both",
    show_default=True,
    type=click.Choice(list(SIGNALS)),
    help="kill: SIGKILL (the link drops at once); stop: SIGSTOP (a hang: the link stays open); "
    "both: one run of each",
)
@hedging.mode_option("the master's scheduling.hedging: on, off, or one run of each per signal")
@click.option(
    "--grace-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="scheduling.dead_grace_s for the master [the setting in force: 30]",
)
@click.option(
    "--heartbeat-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="scheduling.heartbeat_interval_s for the master [2]",
)
@click.option(
    "--suspect-after-beats",
    type=click.IntRange(min=1),
    default=None,
    help="scheduling.suspect_after_beats for the master [3]",
)
@click.option(
    "--poll-s",
    default=0.05,
    show_default=True,
    type=click.FloatRange(min=0.005),
    help="how often the tasks are looked at (the figures' resolution)",
)
@click.option(
    "--wait-done/--no-wait-done",
    default=True,
    show_default=True,
    help="wait for the moved tasks to finish on B",
)
@click.option(
    "--master",
    "of_master",
    is_flag=True,
    help="kill the leading master instead (three masters on PostgreSQL): how long until a "
    "standby accepts new tasks and the running tasks' results",
)
@click.option(
    "--journal",
    default="postgresql",
    show_default=True,
    help="with --master: the masters' postgresql:// journal, or 'postgresql' for a throwaway "
    "server",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="with --master: rounds, each on a fresh cluster",
)
@run_options(timeout_s=300.0)
def failover_command(
    profile: str,
    time_scale: float,
    tasks: int,
    how: str,
    hedging_mode: str,
    grace_s: float | None,
    heartbeat_s: float | None,
    suspect_after_beats: int | None,
    poll_s: float,
    wait_done: bool,
    of_master: bool,
    journal: str,
    rounds: int,
    timeout_s: float,
    workdir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    """Kill (SIGKILL) or freeze (SIGSTOP) an agent that runs tasks, with hedging off and on:
    how long until they run on the other one. With --master: kill the leading master."""
    deadline = Deadline.after(timeout_s)
    started = time.monotonic()
    if of_master:
        _master_command(
            journal, deadline, profile, time_scale, tasks, poll_s, rounds, workdir, keep, as_json
        )
        return
    runs = []
    try:
        with work_dir(workdir, keep) as root:
            for signal_name in SIGNALS[how]:
                for on in hedging.choices(hedging_mode):
                    env = {
                        **master_env(grace_s, heartbeat_s, suspect_after_beats),
                        **hedging.master_env(on),
                    }
                    progress(f"failover: {signal_name}, hedging {hedging.label(on)}")
                    run = run_failover(
                        root / f"{signal_name}-hedging-{hedging.label(on)}",
                        deadline,
                        profile,
                        time_scale,
                        tasks,
                        env,
                        poll_s,
                        wait_done,
                        signal_name,
                    )
                    run["hedging_requested"] = hedging.label(on)
                    run["target_s"] = TARGET_S[run["signal"]]
                    runs.append(run)
            result: dict[str, Any] = {
                "benchmark": "failover",
                "hedging_supported": hedging.supported(),
                "runs": runs,
                "targets_s": TARGET_S,
                "table": [_row(r) for r in runs],
            }
            if keep or workdir is not None:
                result["workdir"] = str(root)
    except (BenchError, EdgeschedError, grpc.RpcError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    result["runtime_s"] = round(time.monotonic() - started, 2)
    emit(result, as_json, _summary)


def _master_command(
    journal: str,
    deadline: Deadline,
    profile: str,
    time_scale: float,
    tasks: int,
    poll_s: float,
    rounds: int,
    workdir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    from edgesched.tools.bench import master_failover

    if journal != "postgresql" and not journal.startswith("postgresql://"):
        raise click.BadParameter("--journal is 'postgresql' or a postgresql:// URL")
    started = time.monotonic()
    try:
        with work_dir(workdir, keep) as root:
            progress(f"failover --master: {rounds} rounds")
            result = master_failover.master_failover(
                root, journal, deadline, profile, time_scale, tasks or 6, poll_s, rounds
            )
            if keep or workdir is not None:
                result["workdir"] = str(root)
    except (BenchError, EdgeschedError, grpc.RpcError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    result["runtime_s"] = round(time.monotonic() - started, 2)
    emit(result, as_json, master_failover.summary)


def _row(run: dict[str, Any]) -> dict[str, Any]:
    """One line of the side-by-side table."""
    return {
        "signal": run["signal"],
        "hedging": run["hedging_requested"],
        "hedging_in_force": run["settings"].get("hedging"),
        "max_running_elsewhere_s": run["max_running_s"],
        "all_done_s": run["all_done_s"],
        "target_s": run["target_s"],
        "within_target": run["max_running_s"] is not None
        and run["max_running_s"] <= run["target_s"],
    }


def _summary(result: dict[str, Any]) -> str:
    lines = [_run_summary(run) for run in result["runs"]]
    if not result["hedging_supported"]:
        lines.append("this build has no scheduling.hedging: every run was without hedging")
    lines.append("side by side (running elsewhere, all done, after the kill or freeze):")
    for row in result["table"]:
        lines.append(
            f"  {row['signal']:<8} hedging {row['hedging']:<3}  running elsewhere "
            f"{row['max_running_elsewhere_s']} s, all done {row['all_done_s']} s "
            f"(target ≤ {row['target_s']:g} s: {'met' if row['within_target'] else 'missed'})"
        )
    lines.append(f"ran in {result['runtime_s']:.1f} s")
    return "\n".join(lines)


def _run_summary(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"{result['signal']}, hedging {result['hedging_requested']}: "
        f"settings: dead_grace_s={s['dead_grace_s']:g}, heartbeat_interval_s="
        f"{s['heartbeat_interval_s']:g}, suspect_after_beats={s['suspect_after_beats']}, "
        f"master tick {s['master_tick_s']:g} s",
        f"A ({result['device_a']}) held {result['tasks_on_a']} tasks when it got "
        f"{result['signal']}; "
        f"A first seen: "
        + ", ".join(f"{state} at {t:.2f} s" for state, t in result["a_state_first_seen_s"].items()),
    ]
    for info in result["tasks"]:
        if info.get("running_s") is None:
            lines.append(f"  {info['task_id']}: ended {info.get('ended')} before running on B")
            continue
        lines.append(
            f"  {info['task_id']}: requeued {info.get('requeued_s')} s, assigned to B "
            f"{info['assigned_s']:.2f} s, running on B {info['running_s']:.2f} s after the kill"
        )
    lines.append(
        f"max: running on B {result['max_running_s']} s after the kill "
        f"(expected ≈ {result['expected_s']:g} s); resolution {result['poll_s']:g} s"
    )
    if result["done_on_b"] is not None:
        lines.append(
            f"{result['done_on_b']} of them finished on B; all ended {result['all_done_s']} s "
            "after the kill"
        )
    return "\n".join(lines)
