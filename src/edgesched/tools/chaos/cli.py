"""``edgesched chaos``: a repeatable chaos run graded by an independent ledger.

A master and several emulated agents run on loopback; a seed-protocol client uploads a few
thousand pictures (some deliberately truncated) while the master and agents are SIGKILLed and
restarted on a seeded schedule. The grade never trusts the journal under test for delivered
results: the client's list of acknowledged uploads is checked against a bare HTTP receiver that
logs every result file it is handed, before any deduplication. Only dead tasks come from the
master's API, because the seed protocol pushes nothing for them.

Module-level imports stay light (click, stdlib): the CLI imports this module for `edgesched chaos`
only, after checking that the master extra is installed."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import click

from edgesched.tools.chaos.notes import note
from edgesched.tools.chaos.run import RunConfig, fast_health, run


@click.command("chaos")
@click.option("--tasks", default=2000, show_default=True, help="Pictures to upload.")
@click.option("--agents", default=3, show_default=True, help="Emulated boards.")
@click.option("--master-kills", default=2, show_default=True, help="SIGKILLs of the master.")
@click.option(
    "--masters",
    default=1,
    show_default=True,
    type=click.IntRange(1, 9),
    help="Masters on one PostgreSQL journal (more than 1 needs --journal); a master kill "
    "SIGKILLs the leader of the moment.",
)
@click.option(
    "--journal",
    default="",
    help="postgresql://... or 'postgresql' (a throwaway server for the run, restarted as a "
    "crash --postgres-restarts times) [SQLite]",
)
@click.option(
    "--postgres-restarts",
    default=1,
    show_default=True,
    type=click.IntRange(0, 10),
    help="With --journal postgresql: crashes and restarts of the database.",
)
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
    masters: int,
    journal: str,
    postgres_restarts: int,
    agent_kills: int,
    bad: int,
    seed: int,
    time_scale: float,
    workspace: Path | None,
    keep: bool,
    timeout: float,
) -> None:
    """Kills masters and agents at random (seeded) under load, then grades the run by an
    independent ledger. Prints one JSON object; exits 0 when every picture was acknowledged
    once (one task each), nothing was lost, done + dead == accepted and dead == bad.

    With --masters 3 --journal postgresql: three masters share a throwaway PostgreSQL, a master
    kill hits the leader of the moment, and the database is crashed and restarted too."""
    if tasks < 1 or agents < 1 or not 0 <= bad <= tasks or min(master_kills, agent_kills) < 0:
        raise click.BadParameter("need tasks ≥ 1, agents ≥ 1, 0 ≤ bad ≤ tasks, kills ≥ 0")
    if masters > 1 and not journal:
        raise click.BadParameter("several masters share a PostgreSQL journal: give --journal")
    if journal and journal != "postgresql" and not journal.startswith("postgresql://"):
        raise click.BadParameter("--journal is 'postgresql' or a postgresql:// URL")
    cfg = RunConfig(
        tasks,
        agents,
        master_kills,
        agent_kills,
        bad,
        seed,
        time_scale,
        timeout,
        masters=masters,
        journal=journal,
        pg_restarts=postgres_restarts,
    )
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
    ok = ok and summary["accepted_twice"] == 0 and summary["tasks_journaled"] == tasks
    sys.exit(0 if ok and summary["dead"] == bad and summary["accepted"] == tasks else 1)
