"""What the core asks its shell to do (or tells it), returned by every event method of
``Core`` as a ``list[Command]``. Plain frozen records: the shell carries them out."""

from __future__ import annotations

from dataclasses import dataclass

from edgesched.core.state import Task


@dataclass(frozen=True)
class Assign:
    """Send the task to the device as this attempt."""

    task: Task
    device_id: str
    attempt: int


@dataclass(frozen=True)
class CancelAttempt:
    """Tell the device to stop this attempt (its result would be discarded anyway)."""

    task_id: str
    device_id: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class Persist:
    """The task's state changed: write it to the journal."""

    task: Task


@dataclass(frozen=True)
class Finished:
    """The task reached a final state: tell whoever waits for it."""

    task: Task


@dataclass(frozen=True)
class Expired:
    """The device was declared dead: close its link if one is still open (a healed partition
    must rejoin and be reconciled, not carry on as if nothing happened)."""

    device_id: str


@dataclass(frozen=True)
class Reconciled:
    """A device (re)joined: the tasks it runs that it keeps, and those it must drop."""

    device_id: str
    keep: list[str]
    drop: list[str]


@dataclass(frozen=True)
class Forgotten:
    """The device was dead or gone long enough: it left the registry."""

    device_id: str


Command = Assign | CancelAttempt | Persist | Finished | Expired | Reconciled | Forgotten


def reconciliation(commands: list[Command]) -> Reconciled:
    """The ``Reconciled`` among what ``Core.register`` returned (it always holds one)."""
    for command in commands:
        if isinstance(command, Reconciled):
            return command
    raise ValueError("no Reconciled among the commands")


def accepted(commands: list[Command], task_id: str) -> bool:
    """Whether ``Core.done`` took the result: then the task finished (first result wins)."""
    return any(isinstance(c, Finished) and c.task.id == task_id for c in commands)
