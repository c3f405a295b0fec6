"""Hedging on and off, for the benchmarks that compare them (``failover``, ``straggler``).

The master switch is ``scheduling.hedging`` (environment ``EDGESCHED_SCHEDULING_HEDGING``); a
build whose settings have no such key cannot hedge, so the benchmarks then run every case with
nothing set and say so (``hedging_supported: false``) rather than fail. What a task reports of
its hedges (``hedges``, ``timings.wasted_ms``) is read where present and counted 0 otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from edgesched.config import SchedulingSettings

ENV = "EDGESCHED_SCHEDULING_HEDGING"
MODES = {"on": [True], "off": [False], "both": [False, True]}  #: off first: the reference


def supported() -> bool:
    """Whether this build's scheduling settings have the master switch."""
    return any(f.name == "hedging" for f in dataclasses.fields(SchedulingSettings))


def choices(value: str) -> list[bool]:
    """``on``, ``off`` or ``both`` (off first: the reference)."""
    return MODES[value]


def mode_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--hedging on|off|both`` (default both), given to the command as ``hedging_mode``
    and read with ``choices``."""
    return click.option(
        "--hedging",
        "hedging_mode",
        default="both",
        show_default=True,
        type=click.Choice(list(MODES)),
        help=help_text,
    )


def label(on: bool) -> str:
    return "on" if on else "off"


def master_env(on: bool) -> dict[str, str]:
    """The master's environment for hedging ``on``; nothing where it cannot hedge."""
    return {ENV: "true" if on else "false"} if supported() else {}


def settings_with(settings: SchedulingSettings, on: bool) -> SchedulingSettings:
    """A copy of ``settings`` with hedging ``on`` (the simulator's core); unchanged where the
    settings have no switch."""
    copy = dataclasses.replace(settings)
    if supported():
        # by name: the field comes with the hedging mechanism, and this runs before and after
        setattr(copy, "hedging", on)  # noqa: B010
    return copy


def in_force(settings: SchedulingSettings) -> dict[str, Any]:
    """The hedging settings a run used, as far as this build has them."""
    out: dict[str, Any] = {"hedging_supported": supported()}
    for key in ("hedging", "hedge_budget", "hedge_straggler_factor"):
        if hasattr(settings, key):
            out[key] = getattr(settings, key)
    return out


def task_counts(row: Any) -> tuple[int, float]:
    """(hedges, wasted ms) of one finished task: a ``TaskResult`` or a JSON row of the API;
    (0, 0.0) where the build reports neither."""
    # the agreed place is timings.wasted_ms; the task's own field is read too
    if isinstance(row, dict):
        timings = row.get("timings") or {}
        wasted = timings.get("wasted_ms", row.get("wasted_ms"))
        hedges = timings.get("hedges", row.get("hedges"))
        return int(hedges or 0), float(wasted or 0.0)
    hedges = getattr(row, "hedges", 0)
    wasted = getattr(row.timings, "wasted_ms", getattr(row, "wasted_ms", 0.0))
    return int(hedges or 0), float(wasted or 0.0)


def reported(row: Any) -> bool:
    """Whether the task reports its wasted work at all (a build with hedging does: an API
    row's timings carry it once the task was hedged, and its absence then means none)."""
    if isinstance(row, dict):
        return supported() or "wasted_ms" in (row.get("timings") or {}) or "wasted_ms" in row
    descriptors = (row.timings.DESCRIPTOR, row.DESCRIPTOR)
    return any(f.name == "wasted_ms" for d in descriptors for f in d.fields)
