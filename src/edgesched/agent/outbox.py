"""The agent's bounded on-disk outbox: results finished while the link was down.

Each result is one file, written atomically. On rejoin the agent reports their task ids (the
master keeps those attempts) and sends them first; a file is removed only once the master has
acknowledged a heartbeat sent after it, so a link that breaks again loses nothing. When full,
the oldest result is dropped: the master then runs that task again (nothing is lost, it is late).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgesched.wire import link

log = logging.getLogger("edgesched.outbox")


class Outbox:
    """Results kept on disk while no link can take them.

    Owns its directory's files (one per result, at most ``max_items``); it may not decide when a
    result is confirmed: the session removes what an acknowledged heartbeat covers."""

    def __init__(self, directory: str | Path, max_items: int = 1000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        for stale in self.directory.glob("*.part"):
            stale.unlink()
        self._seq = max((self._number(p) for p in self._files()), default=0)

    @staticmethod
    def _number(path: Path) -> int:
        head = path.name.split("-", 1)[0]
        return int(head) if head.isdigit() else 0

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.msg"), key=self._number)

    def put(self, message: link.AgentMessage) -> Path:
        self._seq += 1
        kind = link.kind_of(message) or "msg"
        inner = getattr(message, kind)
        name = f"{self._seq:012d}-{kind}-{getattr(inner, 'task_id', '')}.msg"
        path = self.directory / name
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as handle:
            handle.write(link.encode(message))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        files = self._files()
        for old in files[: max(0, len(files) - self.max_items)]:
            log.warning("outbox full: dropping %s (the master will run it again)", old.name)
            old.unlink(missing_ok=True)
        return path

    def items(self) -> list[tuple[Path, link.AgentMessage]]:
        out = []
        for path in self._files():
            try:
                message = link.decode_agent_message(path.read_bytes())
            except Exception:  # a torn or foreign file: it cannot be sent, drop it
                log.warning("outbox: unreadable %s removed", path.name)
                path.unlink(missing_ok=True)
                continue
            out.append((path, message))
        return out

    def finished_task_ids(self) -> list[str]:
        return sorted(m.result.task_id for _, m in self.items() if link.kind_of(m) == "result")

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._files())
