"""``edgesched chaos``: a repeatable chaos run graded by an independent ledger.

A master and several emulated agents run on loopback; a seed-protocol client uploads a few
thousand pictures (some deliberately truncated) while the master and agents are SIGKILLed and
restarted on a seeded schedule. The grade never trusts the journal under test for delivered
results: the client's list of acknowledged uploads is checked against a bare HTTP receiver that
logs every result file it is handed, before any deduplication. Only dead tasks come from the
master's API, because the seed protocol pushes nothing for them.

Module-level imports stay light (click, stdlib): the CLI imports this module for `edgesched chaos`
only, after checking that the master extra is installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from edgesched.demo.cluster import LocalCluster

#: Short health settings so a killed agent is noticed in seconds, not the default ~36 s.
FAST_HEALTH_ENV = {
    "EDGESCHED_SCHEDULING_HEARTBEAT_INTERVAL_S": "0.5",
    "EDGESCHED_SCHEDULING_DEAD_GRACE_S": "3",
}
PROFILES = ("rk3588", "orin", "atlas310")
UPLOAD_THREADS = 8
#: good tasks acknowledged but without a result yet, at most (a twentieth of the run, within
#: these bounds): uploads then last the whole run, so a kill at any point of it lands among
#: uploads, assignments and result pushes alike
UPLOAD_WINDOW = (10, 100)
BAD_CUT_BYTES = 60  #: past the PNG header (the master's sniff passes), inside the pixel data
#: the gRPC codes a crashed or restarting master produces; the upload is retried (same req_id)
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL")
KILL_WINDOW = (0.05, 0.85)  #: kills fire between these fractions of the run's progress
RESTART_CALM_S = 2.0  #: a restarted process is left alone this long


def note(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON verdict."""
    sys.stderr.write(f"chaos: {message}\n")
    sys.stderr.flush()


# ---- pictures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    name: str  #: the client's file name, unique in this run (the task's `filename` in the API)
    req_id: str  #: Gen-B request id: a resend after a master crash is the same task
    data: bytes
    bad: bool


def _png(index: int) -> bytes:
    import io

    from PIL import Image

    # every picture a different colour, so no two payloads are alike
    colour = (index & 255, (index >> 8) & 255, (index * 53) & 255)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "PNG")
    return out.getvalue()


def make_pictures(tasks: int, bad: int, rng: random.Random, nonce: str) -> list[Picture]:
    """``tasks`` small PNGs; ``bad`` of them (at seeded places) cut short so decoding fails."""
    bad_indices = set(rng.sample(range(tasks), bad))
    pictures = []
    for i in range(tasks):
        data = _png(i)
        if i in bad_indices:
            data = data[:BAD_CUT_BYTES]
        name = f"chaos-{nonce}-{i:05d}.png"
        pictures.append(Picture(name, f"{nonce}-{i}", data, i in bad_indices))
    return pictures


# ---- the ledger: what the client was told, what the receiver was handed ------------------


@dataclass
class Reception:
    name: str  #: the result file's name
    at: float  #: monotonic time it was taken
    answered: bool = False  #: the 200 was written back (False: the pusher died meanwhile)


class Ledger:
    """Thread-safe record of acknowledged uploads and of every result reception."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acked: dict[str, str] = {}  #: picture name → seed file name (`127.0.0.1_<n>.png`)
        self.refused: dict[str, str] = {}  #: picture name → why it was never acknowledged
        self.received: list[Reception] = []  #: every result handed over, repeats included
        self.resends = 0  #: uploads sent again after an error (a crashed or restarting master)
        self._unique: set[str] = set()
        self._good_acked = 0
        self._sending = 0  #: upload calls in flight now
        self._changed = threading.Condition(self._lock)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        with self._changed:
            self._sending += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._lock:
                self._sending -= 1

    def wait_for_upload(self, timeout: float) -> bool:
        """Waits (at most ``timeout``) until an upload call is in flight."""
        with self._changed:
            return self._changed.wait_for(lambda: self._sending > 0, timeout)

    def ack(self, picture: Picture, seed_file: str) -> None:
        with self._lock:
            self.acked[picture.name] = seed_file
            self._good_acked += not picture.bad

    def resent(self) -> None:
        with self._lock:
            self.resends += 1

    def refuse(self, picture: str, reason: str) -> None:
        with self._lock:
            self.refused[picture] = reason

    def receive(self, name: str) -> Reception:
        reception = Reception(name, time.monotonic())
        with self._lock:
            self.received.append(reception)
            self._unique.add(name)
            self._changed.notify_all()
        return reception

    def wait_for_room(self, window: int, deadline: float) -> None:
        """Blocks while ``window`` good tasks are waiting for their results."""
        with self._changed:
            while self._good_acked - len(self._unique) >= window:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 1.0))

    def counts(self) -> tuple[int, int]:
        """(acknowledged uploads, distinct results received)"""
        with self._lock:
            return len(self.acked), len(self._unique)

    def progress(self) -> int:
        """Acknowledged uploads plus distinct results received."""
        with self._lock:
            return len(self.acked) + len(self._unique)

    def settled(self) -> int:
        with self._lock:
            return len(self.acked) + len(self.refused)

    def snapshot(self) -> tuple[dict[str, str], list[str]]:
        with self._lock:
            return dict(self.acked), [r.name for r in self.received]


def result_file(seed_file: str) -> str:
    """The seed names a task's result after its saved upload: `127.0.0.1_<n>.txt`."""
    return seed_file.rsplit(".", 1)[0] + ".txt"


# ---- the receiver -----------------------------------------------------------------------

_FILE_PART = re.compile(rb'name="file"; filename="([^"]+)"')


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the master pushes 16 at a time; 5 (the default) refuses some
    daemon_threads = True


class Receiver:
    """A bare ``POST /recv_rst`` receiver that logs each file name before anything else."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the pusher died while sending: nothing was handed over
                taken = [ledger.receive(m.group(1).decode()) for m in _FILE_PART.finditer(body)]
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "13")
                    self.end_headers()
                    self.wfile.write(b"File received")
                    self.wfile.flush()
                except OSError:
                    return  # the master was killed before it read the answer
                for reception in taken:
                    reception.answered = True

            def log_message(self, *args: Any) -> None:
                return None

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the client -------------------------------------------------------------------------


def _body(picture: Picture) -> bytes:
    body = {
        "filename": picture.name,
        "content_b64": base64.b64encode(picture.data).decode(),
        "tasktype": "layout",
        "req_id": picture.req_id,
    }
    return json.dumps(body).encode("utf-8")


def _upload_one(call: Any, picture: Picture, ledger: Ledger, deadline: float) -> None:
    """Sends one picture until it is acknowledged, refused for good, or time runs out."""
    import grpc

    delay = 0.1
    while time.monotonic() < deadline:
        try:
            with ledger.sending():
                reply = call(_body(picture), timeout=10, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is None or code.name not in RETRYABLE:
                ledger.refuse(picture.name, f"{code}: {exc.details()}")
                return
        else:
            ledger.ack(picture, json.loads(reply)["filename"])
            return
        ledger.resent()
        time.sleep(delay)
        delay = min(2.0, delay * 2)
    ledger.refuse(picture.name, "not acknowledged before the timeout")


@dataclass
class Uploads:
    target: str  #: the master's gRPC address (the same across restarts)
    queue: list[Picture]  #: still to send, popped from the end
    ledger: Ledger
    window: int
    deadline: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Picture | None:
        self.ledger.wait_for_room(self.window, self.deadline)
        with self.lock:
            return self.queue.pop() if self.queue else None


def _upload_worker(uploads: Uploads) -> None:
    import grpc

    # reconnect quickly after a master restart instead of gRPC's default backoff (up to 120 s)
    options = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    with grpc.insecure_channel(uploads.target, options=options) as channel:
        call = channel.unary_unary("/ImageUpload/UploadImage")
        while (picture := uploads.next()) is not None:
            _upload_one(call, picture, uploads.ledger, uploads.deadline)


def start_uploads(
    target: str, pictures: list[Picture], ledger: Ledger, deadline: float
) -> list[threading.Thread]:
    low, high = UPLOAD_WINDOW
    window = max(low, min(high, len(pictures) // 20))
    uploads = Uploads(target, list(reversed(pictures)), ledger, window, deadline)
    threads = [
        threading.Thread(target=_upload_worker, args=(uploads,), daemon=True)
        for _ in range(UPLOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    return threads


# ---- kills ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    at: float  #: fraction of the run's progress at which it fires
    target: str  #: "master" or an agent's name
    pause: float  #: seconds down before the restart


def kill_schedule(
    rng: random.Random, master_kills: int, agent_kills: int, agents: list[str]
) -> list[Kill]:
    """Seeded kills spread over the run: one in each of equal slices of the kill window (so they
    do not bunch up), the order of master and agent kills shuffled. Agents stay down for up to
    5 s: some come back within the master's dead grace (3 s, reconciled), some after it (their
    tasks were queued again)."""
    targets = ["master"] * master_kills + [rng.choice(agents) for _ in range(agent_kills)]
    rng.shuffle(targets)
    low, high = KILL_WINDOW
    width = (high - low) / max(1, len(targets))
    return [
        Kill(
            low + width * (i + rng.random()),
            target,
            rng.uniform(0.3, 2.0) if target == "master" else rng.uniform(0.5, 5.0),
        )
        for i, target in enumerate(targets)
    ]


def agent_args(index: int, seed: int, time_scale: float) -> list[str]:
    return [
        "--backend",
        "sleep",
        "--emulate",
        PROFILES[index % len(PROFILES)],
        "--time-scale",
        str(time_scale),
        "--seed",
        str(seed * 100 + index + 1),
    ]


@dataclass
class Chaos:
    cluster: LocalCluster
    agents: dict[str, list[str]]  #: agent name → its command-line arguments
    ledger: Ledger
    started: float = field(default_factory=time.monotonic)
    master_restarts: int = 0
    agent_kills: int = 0
    #: killed processes → when to start them again. Restarts are not waited for in line, so
    #: the run goes on (and later kills fire, a master's while an agent is down) meanwhile
    down: dict[str, float] = field(default_factory=dict)
    #: restarted processes → when they may be killed again: an agent killed before it even
    #: joined, or a master before it restored its journal, tests little
    calm_until: dict[str, float] = field(default_factory=dict)
    master_killed_at: list[float] = field(default_factory=list)  #: monotonic times

    def fire(self, kill: Kill) -> bool:
        """SIGKILLs the kill's target; False (try later) while that target is still down."""
        import signal

        if kill.target in self.down or time.monotonic() < self.calm_until.get(kill.target, 0):
            return False
        # a master killed in the middle of an upload is the case req_id exists for: wait a
        # little for one (uploads pause while the client waits for results)
        busy = kill.target == "master" and self.ledger.wait_for_upload(1.0)
        when = time.monotonic() - self.started
        during = " during an upload" if busy else ""
        acked, results = self.ledger.counts()
        note(
            f"t={when:.1f}s ({acked} acknowledged, {results} results) SIGKILL {kill.target}"
            f"{during}, restart after {kill.pause:.1f}s"
        )
        self.cluster.kill(kill.target, signal.SIGKILL)
        if kill.target == "master":  # once it is gone: a push just before counts as before
            self.master_killed_at.append(time.monotonic())
        self.down[kill.target] = time.monotonic() + kill.pause
        self.agent_kills += kill.target != "master"
        return True

    def restart_due(self) -> None:
        now = time.monotonic()
        for target in [t for t, at in self.down.items() if at <= now]:
            del self.down[target]
            self.calm_until[target] = time.monotonic() + RESTART_CALM_S
            if target == "master":
                self.restart_master()
                self.master_restarts += 1
            else:
                self.cluster.start_agent(target, self.agents[target])

    def restart_master(self, tries: int = 5) -> None:
        """Same ports as before (the cluster kept them), so clients and agents reconnect alone.
        A bind can fail for a moment after a kill; try again rather than end the run."""
        from edgesched.errors import TransportError

        for attempt in range(1, tries + 1):
            try:
                self.cluster.start_master()
                return
            except TransportError as exc:
                if attempt == tries:
                    raise
                note(f"master restart {attempt} failed, trying again: {str(exc)[-200:]}")
                time.sleep(1.0)


# ---- grading ----------------------------------------------------------------------------


def dead_pictures(http_url: str) -> set[str]:
    """Client file names of the dead tasks: the seed protocol pushes nothing for them."""
    import httpx

    names: set[str] = set()
    offset = 0
    while True:
        response = httpx.get(
            f"{http_url}/api/v1/tasks",
            params={"state": "dead", "limit": 1000, "offset": offset},
            timeout=10,
        )
        response.raise_for_status()
        tasks = response.json()["tasks"]
        names.update(t["filename"] for t in tasks)
        if len(tasks) < 1000:
            return names
        offset += len(tasks)


@dataclass
class Verdict:
    accepted: int
    done: int
    dead: int
    lost: int
    duplicates_delivered: int


def grade(acked: dict[str, str], received: list[str], dead: set[str]) -> Verdict:
    counts = Counter(received)
    done = {p for p, f in acked.items() if result_file(f) in counts}
    died = {p for p in acked if p in dead}
    return Verdict(
        accepted=len(acked),
        done=len(done),
        dead=len(died),
        lost=len(set(acked) - done - died),
        duplicates_delivered=sum(n - 1 for n in counts.values()),
    )


def unaccounted(ledger: Ledger, http_url: str) -> int | None:
    """Acknowledged tasks with neither a received result nor a dead state (yet); None when the
    master cannot say right now."""
    import httpx

    acked, received = ledger.snapshot()
    waiting = {result_file(f) for f in acked.values()} - set(received)
    if not waiting:
        return 0
    try:
        dead = dead_pictures(http_url)
    except httpx.HTTPError as exc:
        note(f"cannot list dead tasks yet: {exc}")
        return None
    return sum(1 for p, f in acked.items() if result_file(f) in waiting and p not in dead)


# ---- the run ----------------------------------------------------------------------------


@dataclass
class RunConfig:
    tasks: int
    agents: int
    master_kills: int
    agent_kills: int
    bad: int
    seed: int
    time_scale: float
    timeout: float


def start_cluster(root: Path, receiver: Receiver, cfg: RunConfig) -> Chaos:
    from edgesched.demo.cluster import LocalCluster

    cluster = LocalCluster(
        root=root, log_level="info", extra_master_args=["--result-port", str(receiver.port)]
    )
    chaos = Chaos(cluster, {}, receiver.ledger)
    cluster.start_master()
    for i in range(cfg.agents):
        name = f"agent-{i + 1}"
        chaos.agents[name] = agent_args(i, cfg.seed, cfg.time_scale)
        cluster.start_agent(name, chaos.agents[name])
    cluster.wait_for_devices(cfg.agents)
    return chaos


def drive(chaos: Chaos, ledger: Ledger, cfg: RunConfig, kills: list[Kill], deadline: float) -> None:
    """Fires the kills as progress passes them, then waits (until the deadline at most) for
    every acknowledged task to be accounted for."""
    total = 2 * cfg.tasks - cfg.bad  # every upload acknowledged + every good result received
    pending = list(kills)
    last_check = 0.0
    while time.monotonic() < deadline:
        progress = ledger.progress() / total
        while pending and pending[0].at <= progress and chaos.fire(pending[0]):
            pending.pop(0)
        chaos.restart_due()
        now = time.monotonic()
        quiet = not pending and not chaos.down
        if quiet and ledger.settled() == cfg.tasks and now - last_check >= 1.0:
            last_check = now
            if unaccounted(ledger, chaos.cluster.http_url) == 0:
                return
        time.sleep(0.05)
    note(f"timed out; {len(pending)} kills never fired, {sorted(chaos.down)} still down")


def write_records(root: Path, ledger: Ledger) -> None:
    """The ledger on disk, for investigating a failed run (with --keep)."""
    acked, received = ledger.snapshot()
    (root / "ledger.json").write_text(
        json.dumps({"acked": acked, "refused": ledger.refused}, indent=1)
    )
    (root / "received.log").write_text("".join(f"{n}\n" for n in received))


#: why a result reached the receiver again, judged from the receiver's side alone
REPEAT_KINDS = {
    "unanswered": "the master was SIGKILLed while the receiver was answering its push (the 200 "
    "never reached it), so it pushed again after its restart",
    "after_kill": "the master was SIGKILLed after the receiver's 200 but before its journal had "
    "committed what that push settled (the delivery mark, or even the task's done state), so "
    "after its restart it pushed again (or ran the task again and pushed that)",
    "no_kill": "pushed again with no master kill in between",
}


def repeat_kind(previous: Reception, repeat: Reception, master_kills: list[float]) -> str:
    if not previous.answered:
        return "unanswered"
    if any(previous.at < k < repeat.at for k in master_kills):
        return "after_kill"
    return "no_kill"


def explain_repeats(receptions: list[Reception], master_kills: list[float]) -> None:
    last: dict[str, Reception] = {}
    kinds: Counter[str] = Counter()
    for reception in receptions:
        if reception.name in last:
            kind = repeat_kind(last[reception.name], reception, master_kills)
            kinds[kind] += 1
            note(f"{reception.name} delivered again: {kind}")
        last[reception.name] = reception
    for kind, count in sorted(kinds.items()):
        note(f"{count} duplicate(s): {REPEAT_KINDS[kind]}")


def explain(
    ledger: Ledger, pictures: list[Picture], dead: set[str], master_kills: list[float]
) -> None:
    """Names what the counts alone would hide: which uploads, deaths and deliveries were odd."""
    for name, reason in sorted(ledger.refused.items()):
        note(f"never acknowledged: {name}: {reason}")
    note(f"{ledger.resends} uploads sent again after an error")
    bad = {p.name for p in pictures if p.bad}
    for name in sorted(dead - bad):
        note(f"a good picture ended dead: {name}")
    acked, received = ledger.snapshot()
    for name in sorted(p for p in dead if result_file(acked.get(p, "")) in set(received)):
        note(f"dead, yet its result was delivered: {name}")
    explain_repeats(list(ledger.received), master_kills)


def run(cfg: RunConfig, root: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    pictures = make_pictures(cfg.tasks, cfg.bad, rng, uuid.uuid4().hex[:8])
    ledger = Ledger()
    receiver = Receiver(ledger)
    started = time.monotonic()
    deadline = started + cfg.timeout
    chaos: Chaos | None = None
    try:
        chaos = start_cluster(root, receiver, cfg)
        chaos.started = started
        kills = kill_schedule(rng, cfg.master_kills, cfg.agent_kills, sorted(chaos.agents))
        start_uploads(chaos.cluster.grpc_target, pictures, ledger, deadline)
        drive(chaos, ledger, cfg, kills, deadline)
        dead = dead_pictures(chaos.cluster.http_url)
    finally:
        if chaos is not None:
            chaos.cluster.stop()  # before counting: a push still in flight is a delivery too
        receiver.close()
    acked, received = ledger.snapshot()
    write_records(root, ledger)
    explain(ledger, pictures, dead, chaos.master_killed_at)
    verdict = grade(acked, received, dead)
    return {
        "accepted": verdict.accepted,
        "done": verdict.done,
        "dead": verdict.dead,
        "lost": verdict.lost,
        "duplicates_delivered": verdict.duplicates_delivered,
        "master_restarts": chaos.master_restarts,
        "agent_kills": chaos.agent_kills,
        "seconds": round(time.monotonic() - started, 1),
        "bad": cfg.bad,
    }


@contextlib.contextmanager
def fast_health() -> Iterator[None]:
    """Children inherit the environment: the master and agents get the short health settings."""
    saved = {k: os.environ.get(k) for k in FAST_HEALTH_ENV}
    os.environ.update(FAST_HEALTH_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@click.command("chaos")
@click.option("--tasks", default=2000, show_default=True, help="Pictures to upload.")
@click.option("--agents", default=3, show_default=True, help="Emulated boards.")
@click.option("--master-kills", default=2, show_default=True, help="SIGKILLs of the master.")
@click.option("--agent-kills", default=5, show_default=True, help="SIGKILLs of random agents.")
@click.option("--bad", default=20, show_default=True, help="Truncated pictures among the tasks.")
@click.option("--seed", default=1, show_default=True, help="Seeds pictures and the kill schedule.")
@click.option("--time-scale", default=2.0, show_default=True, help="Emulated service time ×.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the cluster writes (default: a temporary directory).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary workspace (logs, journal).")
@click.option("--timeout", default=600.0, show_default=True, help="Give up after this many s.")
def chaos_command(
    tasks: int,
    agents: int,
    master_kills: int,
    agent_kills: int,
    bad: int,
    seed: int,
    time_scale: float,
    workspace: Path | None,
    keep: bool,
    timeout: float,
) -> None:
    """Kills masters and agents at random (seeded) under load, then grades the run by an
    independent ledger. Prints one JSON object; exits 0 when every picture was acknowledged,
    nothing was lost, done + dead == accepted and dead == bad."""
    if tasks < 1 or agents < 1 or not 0 <= bad <= tasks or min(master_kills, agent_kills) < 0:
        raise click.BadParameter("need tasks ≥ 1, agents ≥ 1, 0 ≤ bad ≤ tasks, kills ≥ 0")
    cfg = RunConfig(tasks, agents, master_kills, agent_kills, bad, seed, time_scale, timeout)
    root = workspace or Path(tempfile.mkdtemp(prefix="edgesched-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with fast_health():
            summary = run(cfg, root)
    finally:
        if workspace is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            note(f"workspace kept at {root}")
    click.echo(json.dumps(summary))
    ok = summary["lost"] == 0 and summary["done"] + summary["dead"] == summary["accepted"]
    sys.exit(0 if ok and summary["dead"] == bad and summary["accepted"] == tasks else 1)
