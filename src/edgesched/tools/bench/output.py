"""How a benchmark speaks: progress lines on stderr, one JSON object or a summary on stdout, and
the options every real-process scenario has."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def progress(line: str) -> None:
    """A line on stderr as a long run goes (stdout keeps the one JSON object)."""
    import click

    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)


def emit(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str]) -> None:
    import click

    click.echo(json.dumps(result) if as_json else summary(result))


def run_options(timeout_s: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every real-process scenario has: ``--timeout`` (a global deadline),
    ``--workdir``, ``--keep`` and ``--json``."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            (
                click.option(
                    "--timeout",
                    "timeout_s",
                    default=timeout_s,
                    show_default=True,
                    type=click.FloatRange(min=1),
                    help="global deadline in seconds",
                ),
                click.option(
                    "--workdir",
                    default=None,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="where the cluster writes [a temporary directory, removed]",
                ),
                click.option("--keep", is_flag=True, help="keep the temporary directory (logs)"),
                click.option("--json", "as_json", is_flag=True, help="print one JSON object"),
            )
        ):
            command = option(command)
        return command

    return apply


def parse_seeds(value: str) -> list[int]:
    """``1-10`` or ``1,4,7``."""
    try:
        if "-" in value.strip("-"):
            first, last = value.split("-", 1)
            seeds = list(range(int(first), int(last) + 1))
        else:
            seeds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give a range like 1-10 or a list like 1,4,7"
        ) from None
    if not seeds:
        raise click.BadParameter(f"{value!r} names no seed")
    return seeds
