"""Logging set-up: one line per event, text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

#: identical lines (same message from the same place) within this window are logged once
REPEAT_WINDOW_S = 10.0
#: distinct lines remembered; beyond it, those whose window ended are let go
REPEAT_KEYS = 4096

_Key = tuple[str, int, int, str]  # builtin generics: fine on Python 3.9


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class RepeatFilter(logging.Filter):
    """Rate-limits identical lines: the first one of a window passes; the repeats are counted,
    and the first one after the window says how many were left out.

    A failure that repeats at the speed of a loop (an accept loop out of descriptors, a peer
    that keeps sending the same bad frame) would otherwise fill the disk with one line.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = REPEAT_KEYS,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        #: line → [start of its window, repeats left out in it]
        self._seen: dict[_Key, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it
            return True
        key = (record.pathname, record.lineno, record.levelno, message)
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return False
        left_out = int(entry[1]) if entry is not None else 0
        if entry is None and len(self._seen) >= self.max_keys:
            self._forget(now)
        self._seen[key] = [now, 0]
        if left_out:
            record.msg = (
                f"{message} [{left_out} identical lines left out in the last {self.window_s:g} s]"
            )
            record.args = None
        return True

    def _forget(self, now: float) -> None:
        for key in [k for k, e in self._seen.items() if now - e[0] >= self.window_s]:
            del self._seen[key]
        if len(self._seen) >= self.max_keys:  # all of them recent: start again
            self._seen.clear()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gRPC's and uvicorn's own chatter stays at warning unless asked for
    for noisy in ("uvicorn", "uvicorn.error", "httpx", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
