"""The cluster's join token: made at the master's first start, kept with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "join-token"


def token_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def read_token(data_dir: str | Path) -> str | None:
    path = token_path(data_dir)
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def load_or_create_token(data_dir: str | Path) -> tuple[str, bool]:
    """Returns (token, created). Created tokens are written atomically with mode 0600."""
    existing = read_token(data_dir)
    if existing:
        return existing, False
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "esj_" + secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token, True


def tokens_equal(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())
