"""The journal's files and folders: private to the master (0600 files, 0700 folders)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_private(path: Path) -> None:
    """Creates ``path`` empty with mode 0600 if it is missing, else makes it 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def private_dir(path: Path) -> None:
    """A data folder: made (parents too) with mode 0700; an existing one is made 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a folder the master does not own stays as it is
        os.chmod(path, 0o700)
