"""``edgesched certs``: the command over ``edgesched.certs`` (init, add-agents) and its report."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from edgesched.certs import (
    CA_CERT,
    CA_KEY,
    DEFAULT_DAYS,
    MASTER_CERT,
    MASTER_KEY,
    AgentCert,
    CertSet,
    add_agents,
    init_certs,
)
from edgesched.errors import ConfigError


def _next_steps(certs: CertSet, agent: AgentCert | None, master_host: str) -> list[str]:
    d = certs.directory

    def q(path: Path) -> str:
        return shlex.quote(str(path))

    lines = [
        "start a secure cluster:",
        f"  edgesched master --tls-cert {q(d / MASTER_CERT)} --tls-key {q(d / MASTER_KEY)} "
        f"--tls-ca {q(d / CA_CERT)}",
    ]
    if agent is not None:
        lines.append(
            f"  edgesched agent --master-ip {shlex.quote(master_host)} "
            f"--tls-cert {q(agent.cert)} --tls-key {q(agent.key)} --tls-ca {q(d / CA_CERT)}"
        )
    lines.append(
        f"copy {CA_CERT} and one agent-<i>.crt/.key pair to each board; keep {CA_KEY} here"
    )
    return lines


def _report(certs: CertSet, master_host: str) -> None:
    click.echo(f"wrote {len(certs.written)} files in {certs.directory}:")
    for path in certs.written:
        click.echo(f"  {path}")
    click.echo("")
    agent = certs.agents[0] if certs.agents else None
    for line in _next_steps(certs, agent, master_host):
        click.echo(line)


@click.group("certs")
def certs_command() -> None:
    """A private CA and TLS certificates for the master and the agents."""


@certs_command.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--agents", type=int, default=1, show_default=True, help="Agent certificates.")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Extra host name or IP of the master (repeatable); localhost, 127.0.0.1, ::1 always.",
)
@click.option("--days", type=int, default=DEFAULT_DAYS, show_default=True, help="Leaf lifetime.")
@click.option(
    "--force", is_flag=True, help="Replace an existing CA (its certificates stop working)."
)
def certs_init(
    directory: Path, agents: int, names: tuple[str, ...], days: int, force: bool
) -> None:
    """Create a CA, a master certificate and N agent certificates in DIRECTORY."""
    try:
        certs = init_certs(directory, agents, list(names), days, force=force)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    # the first extra name is the one the boards most likely dial; else the one-machine default
    _report(certs, names[0] if names else "127.0.0.1")


@certs_command.command("add-agents")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--agents", type=int, default=1, show_default=True, help="More agent certificates.")
@click.option("--days", type=int, default=DEFAULT_DAYS, show_default=True, help="Leaf lifetime.")
def certs_add_agents(directory: Path, agents: int, days: int) -> None:
    """Issue N more agent certificates from the CA already in DIRECTORY."""
    try:
        certs = add_agents(directory, agents, days)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _report(certs, "MASTER_IP")
