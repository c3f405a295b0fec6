"""The ``edgesched`` group and its one table of commands, each loaded when it is used.

Every command, ours and the tools', is registered the same way: a row of :data:`COMMANDS`
(where it is defined, its one-line summary, the extra it needs). ``edgesched --help`` lists
the summaries without importing any command module, and running a command imports only its
own module: a board has the base install only, so ``edgesched agent`` must not import the
master's, the benchmarks' or the CA's modules. The command modules are thin — flags become
settings, settings go to the app.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, NamedTuple

import click

from edgesched import __version__, extras


class Entry(NamedTuple):
    """One top-level command: where it lives, what ``--help`` says of it, what it needs."""

    #: "module:attribute" of the click command
    target: str
    #: its short help, as `edgesched --help` shows it (a unit test keeps it equal to the command's)
    summary: str
    #: the extra it needs beyond the base install (what a board has), or None
    extra: str | None = None
    #: its module imports the extra: without it a stand-in answers, even `--help` (a command
    #: module of edgesched.cli imports only the base install, so its full --help shows anywhere)
    imports_extra: bool = False


COMMANDS = {
    "agent": Entry(
        "edgesched.cli.agent:agent",
        "Run an agent: dial the master, run tasks, return results.",
    ),
    "bench": Entry(
        "edgesched.tools.bench.cli:bench_command",
        "Benchmarks: the simulator's makespan, and real runs of the master and agents.",
        "master",
        imports_extra=True,
    ),
    "certs": Entry(
        "edgesched.cli.certs:certs_command",
        "A private CA and TLS certificates for the master and the agents.",
        "master",
        imports_extra=True,
    ),
    "chaos": Entry(
        "edgesched.tools.chaos.cli:chaos_command",
        "Kills masters and agents at random (seeded) under load, then grades the run by an "
        "independent ledger.",
        "master",
        imports_extra=True,
    ),
    "client": Entry(
        "edgesched.cli.client:client",
        "Client tools: send pictures, receive results.",
    ),
    "config": Entry("edgesched.cli.ops:config", "Inspect the settings."),
    "demo": Entry(
        "edgesched.cli.demo:demo",
        "The whole cluster on this machine: a master, three emulated boards, a client.",
        "all",  # a master and agents running the real model
    ),
    "devices": Entry("edgesched.cli.ops:devices", "List, drain and undrain devices.", "master"),
    "gateway": Entry(
        "edgesched.cli.master:gateway",
        "The seed's split layout: the gateway (HTTP, scheduler, journal, agent link).",
        "master",
    ),
    "journal": Entry(
        "edgesched.cli.ops:journal",
        "The master's journal (edgesched.db): backups; see also `edgesched master --repair`.",
    ),
    "master": Entry(
        "edgesched.cli.master:master",
        "Run the master: task intake (gRPC) and gateway (HTTP) in one process.",
        "master",
    ),
    "probe": Entry(
        "edgesched.cli.probe:probe_command",
        "Print what this machine would report and which probe produced each metric.",
    ),
    "status": Entry(
        "edgesched.cli.ops:status",
        "The cluster at a glance: devices and tasks by state, queue depth.",
        "master",
    ),
    "task-manager": Entry(
        "edgesched.cli.master:task_manager",
        "The seed's split layout: ImageUpload intake that forwards pictures to the gateway.",
        "master",
    ),
    "tasks": Entry("edgesched.cli.ops:tasks", "List, inspect, retry and cancel tasks.", "master"),
    "token": Entry(
        "edgesched.cli.ops:token",
        "The cluster's join token (agents) and API token (clients, operators).",
    ),
}


class Commands(click.Group):
    """The top-level group: resolves :data:`COMMANDS` on first use of each.

    A command that needs an extra checks for it when it runs (its ``--help`` still works) and
    otherwise says in one line which extra to install, exit status 2, instead of a traceback;
    a module that imports the extra itself is not imported at all while the extra is missing.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            entry = COMMANDS[cmd_name]
            if entry.extra and entry.imports_extra and extras.missing(entry.extra):
                # its module would fail to import: a stand-in that only says what is missing
                stand_in = click.Command(
                    cmd_name,
                    help=entry.summary,
                    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                )
                _require_extra(stand_in, cmd_name, entry.extra)
                return stand_in
            module, attribute = entry.target.split(":")
            command = getattr(importlib.import_module(module), attribute)
            if entry.extra:
                _require_extra(command, cmd_name, entry.extra)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but commands not loaded yet are listed by their summary, unimported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name].summary)
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _require_extra(command: click.Command, name: str, extra: str) -> None:
    """Makes ``command`` check that ``extra`` is installed before it runs."""
    inner = command.callback

    def checked(*args: Any, **kwargs: Any) -> Any:
        absent = extras.missing(extra)
        if absent:
            click.echo(
                f"edgesched {name} needs edgesched[{extra}] ({', '.join(absent)} not "
                f"installed): {extras.install_hint(extra)}",
                err=True,
            )
            sys.exit(2)
        return inner(*args, **kwargs) if inner is not None else None

    command.callback = functools.update_wrapper(checked, inner) if inner else checked


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="edgesched")
def main() -> None:
    """edgesched: spread AI-inference tasks over heterogeneous edge boards."""


if __name__ == "__main__":  # pragma: no cover
    main()
