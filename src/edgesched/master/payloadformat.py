"""The payload log's format: an entry's bytes, a task's reference into the log, and reading an
entry back with its CRC checked (``payloadlog`` owns the segments).

An entry is ``HEADER`` (magic, kind, metadata length, data length, CRC32 of metadata + data, the
journal transaction that holds it), then the metadata (JSON) and the data. A *task* entry's
metadata is the task as journaled at submission (its intake record), its data the payload; an
*end* entry's metadata is ``{"ids": [...]}``, the tasks whose payload is released.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched.errors import PayloadError
from edgesched.journal.base import TaskRow, from_json_value, json_value

FOLDER = "payloads"
MAGIC = b"ESPL"
#: magic, kind, metadata length, data length, CRC32 of metadata + data, journal commit
HEADER = struct.Struct("<4sB3xIQIQ")
TASK = 1
END = 2
COLUMNS = tuple(TaskRow.columns())
_REF = re.compile(r"^payloads/(seg-\d{16}\.log)@(\d+)\+(\d+)$")


@dataclass(frozen=True, slots=True)
class LogRef:
    """Where a payload lies in the log: the segment, the entry's offset, the data's length."""

    segment: str
    offset: int
    length: int

    def __str__(self) -> str:
        return f"{FOLDER}/{self.segment}@{self.offset}+{self.length}"


def parse_ref(payload_path: str) -> LogRef | None:
    """The log reference in a task's ``payload_path``; None for a file's path."""
    found = _REF.match(payload_path)
    if found is None:
        return None
    return LogRef(found.group(1), int(found.group(2)), int(found.group(3)))


def segment_name(number: int) -> str:
    return f"seg-{number:016d}.log"


def record_of(row: TaskRow) -> dict[str, Any]:
    """The task as journaled (not dataclasses.asdict: its deep copy costs, on the writer thread)."""
    return {name: json_value(name, getattr(row, name)) for name in COLUMNS}


def row_of(record: dict[str, Any]) -> TaskRow | None:
    """The task in an entry's metadata, or None when it does not make one."""
    try:
        return TaskRow(**{k: from_json_value(k, v) for k, v in record.items() if k in COLUMNS})
    except (TypeError, ValueError, KeyError):
        return None


def entry_at(fd: int, offset: int, size: int) -> tuple[int, dict[str, Any], int, int] | None:
    """(kind, metadata, entry length, commit) of the entry at ``offset``; None if torn.
    The data is skipped (its CRC is checked when it is read)."""
    head = os.pread(fd, HEADER.size, offset)
    if len(head) < HEADER.size:
        return None
    magic, kind, meta_len, data_len, _crc, commit = HEADER.unpack(head)
    length = HEADER.size + meta_len + data_len
    if magic != MAGIC or kind not in (TASK, END) or offset + length > size:
        return None
    try:
        record = json.loads(os.pread(fd, meta_len, offset + HEADER.size))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return kind, record, length, commit


def encode_entry(kind: int, meta: bytes, data: bytes, commit: int) -> bytes:
    """An entry's bytes: header, metadata, data."""
    crc = zlib.crc32(data, zlib.crc32(meta))
    return HEADER.pack(MAGIC, kind, len(meta), len(data), crc, commit) + meta + data


def read_entry(folder: Path, ref: LogRef) -> bytes:
    """The data of the task entry ``ref`` names, its CRC checked; ``PayloadError`` with why."""
    path = folder / ref.segment
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PayloadError(f"payload log {path}: {exc.strerror}") from exc
    try:
        head = os.pread(fd, HEADER.size, ref.offset)
        if len(head) < HEADER.size:
            raise PayloadError(f"payload log {path}: no entry at byte {ref.offset}")
        magic, kind, meta_len, data_len, crc, _ = HEADER.unpack(head)
        if magic != MAGIC or kind != TASK or data_len != ref.length:
            raise PayloadError(f"payload log {path}: no task entry at byte {ref.offset}")
        body = os.pread(fd, meta_len + data_len, ref.offset + HEADER.size)
    except OSError as exc:
        raise PayloadError(f"payload log {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(body) != meta_len + data_len or zlib.crc32(body) != crc:
        raise PayloadError(
            f"payload log {path}: the entry at byte {ref.offset} does not match its CRC"
        )
    return body[meta_len:]
