"""The cluster's secrets: the join token (admits agents) and the API token (clients, operators).

Both are made at the master's first start and kept in its data directory with mode 0600. They
are never written to a log: the master prints the join token only to an interactive terminal;
`edgesched token show` prints either again, `edgesched token rotate` replaces one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILES = {"join": "join-token", "api": "api-token"}
PREFIXES = {"join": "esj_", "api": "esa_"}


def token_path(data_dir: str | Path, kind: str = "join") -> Path:
    return Path(data_dir) / TOKEN_FILES[kind]


def read_token(data_dir: str | Path, kind: str = "join") -> str | None:
    try:
        return token_path(data_dir, kind).read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def write_token(data_dir: str | Path, kind: str = "join") -> str:
    """A new random token, written atomically with mode 0600."""
    return store_token(data_dir, kind, PREFIXES[kind] + secrets.token_urlsafe(24))


def store_token(data_dir: str | Path, kind: str, token: str) -> str:
    """Writes ``token`` (one made elsewhere: the masters' shared one) atomically, mode 0600."""
    path = token_path(data_dir, kind)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token


def load_or_create_token(data_dir: str | Path, kind: str = "join") -> tuple[str, bool]:
    """Returns (token, created)."""
    existing = read_token(data_dir, kind)
    if existing:
        return existing, False
    return write_token(data_dir, kind), True


class TokenFile:
    """A token read from its file, re-read when the file changes (so a rotation needs no
    restart). Agents admitted before a rotation keep working: they use their credentials."""

    def __init__(self, data_dir: str | Path, kind: str) -> None:
        self.path = token_path(data_dir, kind)
        self.value, self.created = load_or_create_token(data_dir, kind)
        self._stamp = self._mtime()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def current(self) -> str:
        stamp = self._mtime()
        if stamp != self._stamp:
            self._stamp = stamp
            self.value = read_token(self.path.parent, _kind_of(self.path)) or self.value
        return self.value


def _kind_of(path: Path) -> str:
    return next(kind for kind, name in TOKEN_FILES.items() if name == path.name)


def tokens_equal(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())
