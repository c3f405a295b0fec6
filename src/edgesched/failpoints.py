"""Named failure points: kill the process exactly there, for crash tests.

``EDGESCHED_FAILPOINTS=after_commit_before_ack`` (comma-separated; ``name:N`` fires at the N-th
time the point is reached) makes the process SIGKILL itself at that point. Armed once at start
from the environment the process was given; unarmed points cost one set lookup.

Points: ``before_commit`` (journal, after the payload log's write, before COMMIT),
``after_commit_before_ack`` (intake, the task is durable but the client has not been
answered), ``after_assignment_sent`` (link, the last
payload chunk of an assignment was handed to gRPC), ``before_result_push`` (seed result pusher).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping

POINTS = frozenset(
    {"before_commit", "after_commit_before_ack", "after_assignment_sent", "before_result_push"}
)
ENV = "EDGESCHED_FAILPOINTS"

_armed: dict[str, int] = {}
_lock = threading.Lock()


def arm_from_env(env: Mapping[str, str]) -> None:
    _armed.clear()
    for item in filter(None, (p.strip() for p in env.get(ENV, "").split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown failure point {name!r}; known: {', '.join(sorted(POINTS))}")
        _armed[name] = int(count or "1")


def hit(name: str) -> None:
    """Kills this process if ``name`` is armed and this is its N-th hit."""
    if name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        if _armed[name] > 0:
            return
    sys.stderr.write(f"failpoint {name}: killing process {os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
