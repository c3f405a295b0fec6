"""Payload files (seed uploads, a dead task's copy) written atomically, and the small payloads
kept in memory from submission to the task's end so that a dispatch reads nothing from disk.
Native payloads are entries of the payload log (``payloadlog``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edgesched.errors import DiskFullError


def write_payload(path: Path, data: bytes, durable: bool) -> None:
    """Writes atomically (temp file + rename); with ``durable`` also fsyncs file and directory.
    The file is 0600 and a folder made for it 0700: pictures are the users' data."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno == 28:  # ENOSPC
            raise DiskFullError(f"no space left to store the upload ({exc.strerror})") from exc
        raise


def remove_quietly(path: Path) -> None:
    """Removes a payload file that must not stay behind; one already gone is fine."""
    with contextlib.suppress(OSError):
        path.unlink()


#: payloads kept in memory from submission to the task's end, so a dispatch reads no file:
#: each up to this size, all together up to the total (the rest are read back from disk)
PAYLOAD_CACHE_ITEM_BYTES = 4 * 1024 * 1024
PAYLOAD_CACHE_BYTES = 256 * 1024 * 1024


class PayloadCache:
    """Owns the in-memory copies of unfinished tasks' payloads, bounded per item and in all.
    Touches no file: a payload not kept here is read back by the session (the master's
    reader: its file or its payload-log entry)."""

    def __init__(
        self, item_bytes: int = PAYLOAD_CACHE_ITEM_BYTES, total_bytes: int = PAYLOAD_CACHE_BYTES
    ) -> None:
        self.item_bytes = item_bytes
        self.total_bytes = total_bytes
        self._payloads: dict[str, bytes] = {}
        self._bytes = 0

    def keep(self, task_id: str, data: bytes) -> None:
        """Keeps ``data`` if it is small enough and there is room left."""
        if len(data) <= self.item_bytes and self._bytes < self.total_bytes:
            self._payloads[task_id] = data
            self._bytes += len(data)

    def get(self, task_id: str) -> bytes | None:
        return self._payloads.get(task_id)

    def drop(self, task_id: str) -> None:
        data = self._payloads.pop(task_id, None)
        if data is not None:
            self._bytes -= len(data)
