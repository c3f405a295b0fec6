"""The payload log: every task's payload and intake record appended to a few segment files.

Segments live in ``<data_dir>/payloads/`` (``seg-<16 digits>.log``, folder 0700, files 0600).
A *task* entry holds the task as journaled at submission (its intake record) and its payload;
an *end* entry names tasks whose payload is released (the format: ``payloadformat``).

Entries are staged in memory by the journal's writer thread and written once per batch, right
before the journal commits (``before_commit``: one ``os.write``, one ``fdatasync`` under
``durability=full``); a batch that fails is cut off again (``discard``). A native task's
``payload_path`` refers into the log (``payloads/seg-….log@<offset>+<length>``); a seed upload
keeps its file and gets a task entry without data. Segments are deleted oldest first, once
they and every older one hold no live task: an end entry only ends tasks of its own or older
segments, so it is never deleted before the entries it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched.errors import DiskFullError, PayloadError
from edgesched.journal.base import TaskRow
from edgesched.master.payloadformat import (
    END,
    FOLDER,
    TASK,
    LogRef,
    encode_entry,
    entry_at,
    parse_ref,
    read_entry,
    record_of,
    segment_name,
)

log = logging.getLogger("edgesched.payloadlog")


@dataclass(slots=True)
class Entry:
    """A live task entry found by the scan at start."""

    task_id: str
    segment: str
    offset: int
    commit: int
    record: dict[str, Any]


class PayloadLog:
    """Owns the segment files, the staged entries of the batch being written, and the live
    task ids per segment. Called in the journal's writer thread only (or the caller's thread
    before the journal starts and after it stopped); ``read`` may be called from any thread.
    It may not decide whether a task is lost or done: the master does, from the journal."""

    stores_uploads = False  #: a seed upload's file holds its bytes (its entry has none)

    def __init__(self, data_dir: Path, segment_mb: float = 64.0, durable: bool = False) -> None:
        self.data_dir = data_dir
        self.folder = data_dir / FOLDER
        self.segment_bytes = max(1, int(segment_mb * 1024 * 1024))
        self.durable = durable
        self.live: dict[str, set[str]] = {}  #: segment name → its unreleased task ids
        self.where: dict[str, str] = {}  #: task id → its segment
        #: segments the scan found damaged: never deleted (what follows the damage is unknown)
        self.damaged: set[str] = set()
        self.opened = False
        self._number = 0  #: the active segment's number
        self._fd = -1
        self._end = 0  #: bytes of the active segment written and kept
        self._written = 0  #: bytes written by the batch not yet committed (cut off by discard)
        self._batch: list[bytes] = []  #: task entries staged by the open transaction
        self._batch_bytes = 0
        self._batch_ids: list[str] = []
        self._ends: list[str] = []  #: released ids whose end entry waits for the next write

    # ---- start ---------------------------------------------------------------------------

    def open(self) -> dict[str, Entry]:
        """Scans the segments (headers and metadata), cuts off a torn tail, and returns the
        live task entries (without an end entry). Idempotent: a second call returns {}."""
        if self.opened:
            return {}
        self.opened = True
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        entries: dict[str, Entry] = {}
        names = sorted(p.name for p in self.folder.glob("seg-*.log"))
        self.live = {name: set() for name in names}  # a released one left by a crash goes too
        for name in names:
            self._scan(name, entries, last=name == names[-1])
        for entry in entries.values():
            self.live.setdefault(entry.segment, set()).add(entry.task_id)
            self.where[entry.task_id] = entry.segment
        self._number = int(names[-1][4:20]) if names else 0
        if names:
            self._activate(names[-1], append=True)
        else:
            self._roll()
        self._reclaim()
        return entries

    def _scan(self, name: str, entries: dict[str, Entry], last: bool) -> None:
        path = self.folder / name
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            offset = 0
            while offset < size:
                entry = entry_at(fd, offset, size)
                if entry is None and last:  # only the active segment is ever written
                    log.warning(
                        "payload log %s: a torn entry at byte %d (of %d) was cut off: a crash "
                        "interrupted its write before the journal committed it",
                        path,
                        offset,
                        size,
                    )
                    os.ftruncate(fd, offset)
                    break
                if entry is None:  # damage, not a torn write: kept as it is for an operator
                    self.damaged.add(name)
                    log.error(
                        "payload log %s is damaged at byte %d (of %d): the entries after it "
                        "are not read (a task whose payload lies there ends dead, 'payload "
                        "unreadable', when it is sent); it and the segments after it are kept "
                        "until it is removed by hand (docs/operations.md, the payload log)",
                        path,
                        offset,
                        size,
                    )
                    break
                kind, record, length, commit = entry
                if kind == TASK:
                    task_id = str(record.get("id", ""))
                    entries[task_id] = Entry(task_id, name, offset, commit, record)
                else:
                    for task_id in record.get("ids", []):
                        entries.pop(str(task_id), None)
                offset += length
        finally:
            os.close(fd)

    # ---- the writer thread's side --------------------------------------------------------

    def stage_task(self, row: TaskRow, data: bytes | None, commit: int) -> str:
        """Stages ``row``'s task entry (``data``: its payload; None for a seed upload, whose
        file stays its payload_path) and returns where it will lie. A native row's
        ``payload_path`` is set to that reference before its record is taken."""
        if not self.opened:
            self.open()
        if not self._batch and self._end >= self.segment_bytes:
            self._roll()
        offset = self._end + self._batch_bytes
        body = data if data is not None else b""
        ref = str(LogRef(segment_name(self._number), offset, len(body)))
        if data is not None:
            row.payload_path = ref
        meta = json.dumps(record_of(row), separators=(",", ":")).encode()
        entry = encode_entry(TASK, meta, body, commit)
        self._batch.append(entry)
        self._batch_bytes += len(entry)
        self._batch_ids.append(row.id)
        return ref

    def unstage(self, task_id: str) -> None:
        """Takes back the entry just staged for ``task_id``: its row was not inserted (a
        repeated key, a failed statement). Nothing was staged after it (the insert that staged
        it is still running), so no other entry's offset moves."""
        if self._batch_ids and self._batch_ids[-1] == task_id:
            self._batch_ids.pop()
            self._batch_bytes -= len(self._batch.pop())

    def before_commit(self) -> None:
        """Writes what is staged with one write (and one fdatasync under ``full``), right
        before the journal commits. A failure cuts the segment back and raises (ENOSPC as
        ``DiskFullError``): the batch fails as a journal commit on a full disk does."""
        if not self._batch and not self._ends:
            return
        if not self.opened:
            self.open()
        parts = list(self._batch)
        if self._ends:
            meta = json.dumps({"ids": self._ends}, separators=(",", ":")).encode()
            parts.append(encode_entry(END, meta, b"", 0))
        blob = b"".join(parts)
        try:
            written = os.pwrite(self._fd, blob, self._end)
            if written != len(blob):
                raise OSError(errno.ENOSPC, "short write (no space left on device)")
            if self.durable:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._cut()
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"payload log {self.folder}: no space left on device ({exc.strerror})"
                ) from exc
            raise
        self._written = len(blob)

    def committed(self) -> None:
        """The journal committed the batch: its entries are kept and their tasks live."""
        self._end += self._written
        self._written = 0
        if self._batch_ids or self._ends:
            segment = segment_name(self._number)
            live = self.live.setdefault(segment, set())
            for task_id in self._batch_ids:
                live.add(task_id)
                self.where[task_id] = segment
            self._ends.clear()
        self._batch.clear()
        self._batch_ids.clear()
        self._batch_bytes = 0

    def discard(self) -> None:
        """The batch was rolled back or is redone one operation at a time: its task entries
        go and what it wrote is cut off (end entries stay staged: their tasks' ends are
        committed already)."""
        self._cut()
        self._batch.clear()
        self._batch_ids.clear()
        self._batch_bytes = 0

    def release(self, task_ids: list[str]) -> None:
        """Tasks whose end is committed: an end entry goes with the next write, and segments
        left with no live task are deleted, oldest first."""
        for task_id in task_ids:
            segment = self.where.pop(task_id, None)
            if segment is None:  # released already, or never written
                continue
            self.live.get(segment, set()).discard(task_id)
            self._ends.append(task_id)
        self._reclaim()

    def flush(self) -> None:
        """Writes what is staged now (outside a journal commit: at close, in ``--repair``)."""
        self.before_commit()
        self.committed()

    def close(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError, DiskFullError):
            self.flush()
        os.close(self._fd)
        self._fd = -1

    # ---- reading -------------------------------------------------------------------------

    def read(self, payload_path: str) -> bytes:
        """A task's payload: from its file, or from the log with its CRC checked. Raises
        ``PayloadError`` (with why) when it cannot be read back as it was submitted."""
        ref = parse_ref(payload_path)
        if ref is None:
            try:
                return Path(payload_path).read_bytes()
            except OSError as exc:
                raise PayloadError(f"payload {payload_path}: {exc.strerror}") from exc
        return read_entry(self.folder, ref)

    def present(self, payload_path: str) -> bool:
        """Whether the payload can be read back (a log entry's CRC is checked)."""
        try:
            self.read(payload_path)
        except PayloadError:
            return False
        return True

    async def aread(self, row: TaskRow) -> bytes:
        """``read`` in a worker thread (the event loop never waits on the disk)."""
        return await asyncio.to_thread(self.read, row.payload_path)

    async def apresent(self, row: TaskRow) -> bool:
        return await asyncio.to_thread(self.present, row.payload_path)

    # ---- segments ------------------------------------------------------------------------

    def _roll(self) -> None:
        self._number += 1
        self._activate(segment_name(self._number), append=False)

    def _activate(self, name: str, append: bool) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self.folder / name
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._end = os.fstat(self._fd).st_size if append else 0
        self._written = 0
        self.live.setdefault(name, set())

    def _cut(self) -> None:
        """Back to the end of the last committed batch: no half entry is ever counted."""
        if self._fd >= 0:  # also after a failed write: part of it may be on disk
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._end)
        self._written = 0

    def _reclaim(self) -> None:
        active = segment_name(self._number)
        for name in sorted(self.live):
            if name == active or self.live[name] or name in self.damaged:
                break  # oldest first: an end entry never outlives what it ends
            del self.live[name]
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
            log.info("payload log: segment %s released", name)


def folder_size(data_dir: Path) -> int:
    """Bytes the log's segments take (for tests and the dashboard)."""
    folder = data_dir / FOLDER
    return sum(p.stat().st_size for p in folder.glob("seg-*.log")) if folder.is_dir() else 0
