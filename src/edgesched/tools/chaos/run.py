"""One chaos run: start the cluster, upload, fire the kills as progress passes them, restart
what was killed, wait until every acknowledged task is accounted for, grade."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesched.tools.chaos.grading import dead_pictures, explain, grade, unaccounted
from edgesched.tools.chaos.ledger import Ledger
from edgesched.tools.chaos.notes import note
from edgesched.tools.chaos.plan import Kill, agent_args, kill_schedule, make_pictures
from edgesched.tools.chaos.receiver import Receiver
from edgesched.tools.chaos.uploads import start_uploads

if TYPE_CHECKING:
    from edgesched.tools.testing.pgserver import PgServer
    from edgesched.tools.testing.process_cluster import LocalCluster

#: Short health settings so a killed agent is noticed in seconds, not the default ~36 s.
FAST_HEALTH_ENV = {
    "EDGESCHED_SCHEDULING_HEARTBEAT_INTERVAL_S": "0.5",
    "EDGESCHED_SCHEDULING_DEAD_GRACE_S": "3",
}
RESTART_CALM_S = 2.0  #: a restarted process is left alone this long


@dataclass
class Chaos:
    """The kills of one run: fires them on a cluster, restarts what was killed when its pause is
    over, and counts them. It touches the processes only through the cluster (signals, restarts
    on the same ports) and reads the ledger only to time a kill; the grade is not its job.
    """

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
    #: with several masters: the throwaway PostgreSQL server they share (restarted by a kill)
    pg: PgServer | None = None
    pg_restarts: int = 0

    @property
    def several(self) -> bool:
        return self.cluster.masters > 1

    def _victim(self, target: str) -> str:
        """The process a kill hits: with several masters "master" is the leader of the moment
        ("" while none leads: a failover is under way, the kill waits)."""
        if target != "master" or not self.several:
            return target
        leader = self.cluster.leader()
        return "" if leader is None else self.cluster.master_name(leader)

    def fire(self, kill: Kill) -> bool:
        """SIGKILLs the kill's target; False (try later) while that target is still down."""
        import signal

        victim = self._victim(kill.target)
        if not victim or victim in self.down or time.monotonic() < self.calm_until.get(victim, 0):
            return False
        if (
            self.several
            and kill.target == "master"
            and any(t.startswith("master-") for t in self.down)
        ):
            return False  # one leader kill at a time: the killed one comes back as a standby
        # a master killed in the middle of an upload is the case req_id exists for: wait a
        # little for one (uploads pause while the client waits for results)
        busy = kill.target in ("master", "postgres") and self.ledger.wait_for_upload(1.0)
        when = time.monotonic() - self.started
        during = " during an upload" if busy else ""
        acked, results = self.ledger.counts()
        what = "the leader, " if victim != kill.target else ""
        how = "stop -m immediate" if victim == "postgres" else "SIGKILL"
        note(
            f"t={when:.1f}s ({acked} acknowledged, {results} results) {how} {what}{victim}"
            f"{during}, restart after {kill.pause:.1f}s"
        )
        if victim == "postgres":
            assert self.pg is not None
            self.pg.stop("immediate")  # as a crash: recovery from its WAL at the restart
        else:
            self.cluster.kill(victim, signal.SIGKILL)
        if kill.target == "master":  # once it is gone: a push just before counts as before
            self.master_killed_at.append(time.monotonic())
        self.down[victim] = time.monotonic() + kill.pause
        self.agent_kills += kill.target not in ("master", "postgres")
        return True

    def restart_due(self) -> None:
        now = time.monotonic()
        for target in [t for t, at in self.down.items() if at <= now]:
            del self.down[target]
            self.calm_until[target] = time.monotonic() + RESTART_CALM_S
            if target == "master":
                self.restart_master()
                self.master_restarts += 1
            elif target.startswith("master-"):  # a killed leader comes back as a standby
                self.cluster.start_one_master(int(target.rsplit("-", 1)[1]))
                self.master_restarts += 1
            elif target == "postgres":
                assert self.pg is not None
                self.pg.start()
                self.pg_restarts += 1
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

    def api_url(self) -> str:
        """The leader's HTTP address (with several masters: found again after a failover)."""
        if self.several:
            with contextlib.suppress(Exception):
                self.cluster.wait_for_leader(timeout=10)
        return self.cluster.http_url

    def grpc_targets(self) -> list[str]:
        """Where the seed client uploads: every master (a virtual IP would move to the leader)."""
        if not self.several:
            return [self.cluster.grpc_target]
        port = self.cluster.grpc_port
        return [f"{self.cluster.master_host(i)}:{port}" for i in range(self.cluster.masters)]


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
    masters: int = 1
    #: "" = SQLite; "postgresql" = a throwaway PostgreSQL server for the run; or a URL
    journal: str = ""
    pg_restarts: int = 0


def start_cluster(root: Path, receiver: Receiver, cfg: RunConfig, pg: PgServer | None) -> Chaos:
    from edgesched.tools.testing.process_cluster import LocalCluster

    cluster = LocalCluster(
        root=root, log_level="info", extra_master_args=["--result-port", str(receiver.port)]
    )
    chaos = Chaos(cluster, {}, receiver.ledger, pg=pg)
    journal = pg.create_database("chaos") if pg is not None else cfg.journal
    if journal:
        cluster.start_masters(cfg.masters, journal)
    else:
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
            if unaccounted(ledger, chaos.api_url()) == 0:
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


def run(cfg: RunConfig, root: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    pictures = make_pictures(cfg.tasks, cfg.bad, rng, uuid.uuid4().hex[:8])
    ledger = Ledger()
    receiver = Receiver(ledger)
    started = time.monotonic()
    deadline = started + cfg.timeout
    chaos: Chaos | None = None
    pg = None
    if cfg.journal == "postgresql":  # a throwaway server, durable: it is restarted as a crash
        from edgesched.tools.testing.pgserver import PgServer

        pg = PgServer(durable=True).start()  # its own folder in /tmp: the server user reaches it
    try:
        chaos = start_cluster(root, receiver, cfg, pg)
        chaos.started = started
        kills = kill_schedule(
            rng,
            cfg.master_kills,
            cfg.agent_kills,
            sorted(chaos.agents),
            cfg.pg_restarts if pg is not None else 0,
        )
        start_uploads(chaos.grpc_targets(), pictures, ledger, deadline)
        drive(chaos, ledger, cfg, kills, deadline)
        url = chaos.api_url()
        dead = dead_pictures(url)
        journaled = tasks_journaled(url, chaos.cluster.api_token)
    finally:
        if chaos is not None:
            chaos.cluster.stop()  # before counting: a push still in flight is a delivery too
        receiver.close()
        if pg is not None:
            pg.close()
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
        "masters": cfg.masters,
        "postgres_restarts": chaos.pg_restarts,
        #: pictures acknowledged as more than one task (by the ledger: a second seed file
        #: name), and the tasks the masters' journal holds against the pictures accepted
        "accepted_twice": len(ledger.twice),
        "tasks_journaled": journaled,
        "seconds": round(time.monotonic() - started, 1),
        "bad": cfg.bad,
    }


def tasks_journaled(http_url: str, api_token: str) -> int:
    """How many tasks the master's journal holds, in any state (each accepted picture once)."""
    import httpx

    response = httpx.get(
        f"{http_url}/api/v1/summary",
        headers={"authorization": f"Bearer {api_token}"} if api_token else {},
        timeout=10,
    )
    response.raise_for_status()
    return int(sum(response.json()["tasks"].values()))


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
