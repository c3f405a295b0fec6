"""A task's states and why an attempt failed: the enums that travel from the agent to the journal
and the API.

Str-valued enums, so a member is the very string the journal column and the JSON hold
(``TaskState.DONE == "done"``, ``FailureKind.BAD_INPUT == "bad_input"``): nothing on disk or
on the wire changes. An agent may send a kind this master does not know (a newer agent): the
core keeps any string and counts it as the infrastructure's, so ``kind`` parameters stay
``str``. Runs on the boards (Python 3.9).
"""

from __future__ import annotations

import enum

__all__ = ["FINAL_STATES", "FailureKind", "TaskState"]


class TaskState(str, enum.Enum):
    """A task's state: the journal's ``state`` column and the API's ``state`` field."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.DONE, TaskState.DEAD, TaskState.CANCELLED})


class FailureKind(str, enum.Enum):
    BAD_INPUT = "bad_input"  #: the payload can never be read: fatal at once
    BACKEND = "backend"  #: the inference backend failed on it: counts against max_attempts
    TRANSFER = "transfer"  #: the payload arrived damaged (checksum)
    CANCELLED = "cancelled"  #: the agent dropped the attempt on a cancel
    DEVICE_LOST = "device_lost"  #: the device died, left or came back without the attempt
    STALLED = "stalled"  #: the device stopped making progress
    DEADLINE = "deadline"  #: the task's deadline passed
    REJECTED = "rejected"  #: the master could not hand the attempt out
    UNDELIVERABLE = "undeliverable"  #: the seed push could not deliver the result

    def __str__(self) -> str:
        # f-strings and str() give the bare value, as the literals did (Python 3.11 would print
        # "FailureKind.BAD_INPUT" for a str mixin)
        return str(self.value)
