"""The master's disk: free space for uploads, the reserve, and an older master's intake records.

A full disk must never cost an acknowledged task. Uploads are admitted only while the file
system keeps ``master.min_free_mb`` free; ``<data_dir>/reserve`` (``master.reserve_mb``,
preallocated) is space set aside for the journal and the master's own files, released the moment
a journal commit meets a full disk and taken back once space returns.

Every task's *intake record* (the task as it was journaled at submission) is an entry of the
payload log (``payloadlog``), beside its payload. Masters before it kept one file per task,
``<data_dir>/intake/<task-id>.json``; such files are still read (never written): a record whose
task the journal does not hold means the journal lost acknowledged work (refused at start), and
``--repair`` re-journals those tasks from their records and payloads. A record goes when its
task's payload goes (or retention prunes it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from edgesched.errors import DiskFullError
from edgesched.journal.base import TaskRow, from_json_value

log = logging.getLogger("edgesched.storage")

MIB = 1024 * 1024
RESERVE = "reserve"
INTAKE = "intake"
COMMIT_KEY = "_commit"
COLUMNS = tuple(TaskRow.columns())


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system holding ``path`` (or the
    nearest folder above it that exists)."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(FileNotFoundError):
            return shutil.disk_usage(candidate).free
    return 0


#: free space is looked up at most this often per folder, what was admitted since taken off
#: the figure (a statvfs per upload was 6 % of the master's event loop at 500 tasks/s)
FREE_SPACE_TTL_S = 0.05


class DiskGuard:
    def __init__(
        self,
        data_dir: Path,
        min_free_mb: float,
        reserve_mb: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.monotonic = monotonic
        #: folder → (when looked up, free bytes then less the uploads admitted since)
        self._free: dict[Path, tuple[float, int]] = {}
        self.path = data_dir / RESERVE
        self.min_free = int(min_free_mb * MIB)
        self.size = int(reserve_mb * MIB)
        #: why the master takes no new work ("" = it does); set when the reserve is given up
        self.short = ""

    def release(self) -> bool:
        """Gives the reserve back to the file system; True if there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        if not self.short:
            self.short = (
                f"no space left on the disk of {self.data_dir}: the master's reserve is in use; "
                "no new tasks until space returns (docs/operations.md, full disk)"
            )
        return True

    def hold(self) -> bool:
        """Sets the reserve aside (again); False when the disk has no room for it and the
        space the uploads need. Clears ``short`` on success."""
        if self.size <= 0:
            free = free_bytes(self.data_dir)
            if free < self.min_free:
                self.short = self._low(free)
                return False
            self.short = ""
            return True
        try:
            if self.path.stat().st_size >= self.size:
                self.short = ""
                return True
        except FileNotFoundError:
            pass
        free = free_bytes(self.data_dir)
        if free < self.size + self.min_free:
            self.short = self._low(free)
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.short = self._low(free_bytes(self.data_dir), exc)
            return False
        self.short = ""
        return True

    def _low(self, free: int, exc: OSError | None = None) -> str:
        why = f" ({exc.strerror})" if exc is not None else ""
        return (
            f"no space left on the disk of {self.data_dir}: {free / MIB:.1f} MiB free, the "
            f"master needs {(self.size + self.min_free) / MIB:.1f} MiB (master.reserve_mb + "
            f"master.min_free_mb){why}; no new tasks until space returns"
        )

    def check_upload(self, directory: Path, size: int) -> None:
        """Refuses an upload that would leave less than ``master.min_free_mb`` free."""
        if self.short:
            raise DiskFullError(self.short)
        now = self.monotonic()
        seen = self._free.get(directory)
        if seen is None or now - seen[0] >= FREE_SPACE_TTL_S or seen[1] - size < self.min_free:
            seen = (now, free_bytes(directory))  # (a refusal always reads the disk again)
        free = seen[1]
        if free - size < self.min_free:
            raise DiskFullError(
                f"no space left for uploads on the disk of {directory}: {free / MIB:.1f} MiB "
                f"free, the master keeps {self.min_free / MIB:.1f} MiB (master.min_free_mb)"
            )
        self._free[directory] = (seen[0], free - size)


# ---- intake records ----------------------------------------------------------------------


def record_path(data_dir: Path, task_id: str) -> Path:
    return data_dir / INTAKE / f"{task_id}.json"


def remove_record(data_dir: Path, task_id: str) -> None:
    with contextlib.suppress(OSError):
        record_path(data_dir, task_id).unlink()


def read_record(path: Path) -> TaskRow | None:
    """A record's task, or None when it cannot be read."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        names = set(TaskRow.columns())
        return TaskRow(**{k: from_json_value(k, v) for k, v in values.items() if k in names})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def record_commit(path: Path) -> int:
    """The transaction a record's row was committed in (0 when unknown)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(COMMIT_KEY, 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) else 0


def records(data_dir: Path) -> list[Path]:
    folder = data_dir / INTAKE
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def orphans(data_dir: Path, journaled: set[str], recorded: int) -> list[Path]:
    """Intake records of acknowledged tasks the journal does not hold.

    A record written for the transaction right after the last one recorded (``recorded`` + 1)
    belongs to a submission whose commit never happened: the master died in between, nobody was
    told the task was accepted. Such a record and its payload are removed, not reported.
    """
    lost = []
    for path in records(data_dir):
        if path.stem in journaled:
            continue
        if recorded >= 0 and record_commit(path) == recorded + 1:
            row = read_record(path)
            if row is not None:
                with contextlib.suppress(OSError):
                    Path(row.payload_path).unlink()
            log.warning("removed the payload of submission %s: it was never committed", path.stem)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        lost.append(path)
    return lost
