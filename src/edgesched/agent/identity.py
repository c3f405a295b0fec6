"""The agent's identity on disk: the id the master gave it and the credential that proves it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

IDENTITY_FILE = "agent.json"


@dataclass
class Identity:
    """The id and credential the master gave this agent, saved in its data directory.

    Owns the identity file; which identity is current is the session's to decide."""

    agent_id: str = ""
    credential: str = ""

    @classmethod
    def load(cls, data_dir: str | Path) -> Identity:
        path = Path(data_dir) / IDENTITY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return cls()
        return cls(str(data.get("agent_id", "")), str(data.get("credential", "")))

    def save(self, data_dir: str | Path) -> None:
        path = Path(data_dir) / IDENTITY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle)
        os.replace(tmp, path)
