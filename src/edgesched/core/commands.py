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
    """The task's state changed: write it to the journal. Made by ``persist``."""

    task: Task


def persist(task: Task) -> Persist:
    """The command to journal ``task``; from then on the journal vouches for its attempt."""
    task.persisted_attempt = task.attempt
    return Persist(task)


def needs_persist(task: Task) -> bool:
    """Whether an attempt's start (assigned, or reported running) must be journaled.

    Recovery needs only a task's end, its failures and a bound on its attempt numbers: after a
    restart the task is queued again (``Core.restore``) with its attempt taken one past the
    journaled one, so a result of an attempt dispatched but not journaled is refused. That
    holds while at most one attempt beyond the journaled one was ever sent: so an attempt is
    journaled when it is not the single attempt right after the journaled one (a second live
    attempt, or a number further on).
    """
    return len(task.live) > 1 or task.attempt > task.persisted_attempt + 1


def journaled_live(task: Task) -> dict[int, str] | None:
    """The live attempts the journal must hold beside the row's attempt and device: None when
    they say it all (no attempt, or the one live attempt is the newest). A hedged task has two
    (or its newest ended and the original runs on): a restarted master restores each, so the
    agent that reports either one keeps it and its result is taken."""
    live = task.live
    if not live or (len(live) == 1 and task.attempt in live):
        return None
    return dict(sorted(live.items()))


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
