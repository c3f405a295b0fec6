"""The ledger: what the client was told (acknowledged uploads) and what the independent
receiver was handed (result files), each with the moment it happened."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from edgesched.tools.chaos.plan import Picture


@dataclass
class Reception:
    name: str  #: the result file's name
    at: float  #: monotonic time it was taken
    answered: bool = False  #: the 200 was written back (False: the pusher died meanwhile)


class Ledger:
    """Thread-safe record of acknowledged uploads and of every result reception."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acked: dict[str, str] = {}  #: picture name → seed file name (`127.0.0.1_<n>.png`)
        #: picture name → every other seed file it was acknowledged as: a picture accepted as
        #: two tasks (a resend after a failover that the masters did not recognise)
        self.twice: dict[str, set[str]] = {}
        self.refused: dict[str, str] = {}  #: picture name → why it was never acknowledged
        self.received: list[Reception] = []  #: every result handed over, repeats included
        self.resends = 0  #: uploads sent again after an error (a crashed or restarting master)
        self._unique: set[str] = set()
        self._good_acked = 0
        self._sending = 0  #: upload calls in flight now
        self._changed = threading.Condition(self._lock)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        with self._changed:
            self._sending += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._lock:
                self._sending -= 1

    def wait_for_upload(self, timeout: float) -> bool:
        """Waits (at most ``timeout``) until an upload call is in flight."""
        with self._changed:
            return self._changed.wait_for(lambda: self._sending > 0, timeout)

    def ack(self, picture: Picture, seed_file: str) -> None:
        with self._lock:
            first = self.acked.setdefault(picture.name, seed_file)
            if first != seed_file:
                self.twice.setdefault(picture.name, set()).add(seed_file)
                return
            self._good_acked += not picture.bad

    def resent(self) -> None:
        with self._lock:
            self.resends += 1

    def refuse(self, picture: str, reason: str) -> None:
        with self._lock:
            self.refused[picture] = reason

    def receive(self, name: str) -> Reception:
        reception = Reception(name, time.monotonic())
        with self._lock:
            self.received.append(reception)
            self._unique.add(name)
            self._changed.notify_all()
        return reception

    def wait_for_room(self, window: int, deadline: float) -> None:
        """Blocks while ``window`` good tasks are waiting for their results."""
        with self._changed:
            while self._good_acked - len(self._unique) >= window:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 1.0))

    def counts(self) -> tuple[int, int]:
        """(acknowledged uploads, distinct results received)"""
        with self._lock:
            return len(self.acked), len(self._unique)

    def progress(self) -> int:
        """Acknowledged uploads plus distinct results received."""
        with self._lock:
            return len(self.acked) + len(self._unique)

    def settled(self) -> int:
        with self._lock:
            return len(self.acked) + len(self.refused)

    def snapshot(self) -> tuple[dict[str, str], list[str]]:
        with self._lock:
            return dict(self.acked), [r.name for r in self.received]


def result_file(seed_file: str) -> str:
    """The seed names a task's result after its saved upload: `127.0.0.1_<n>.txt`."""
    return seed_file.rsplit(".", 1)[0] + ".txt"
