"""The seed's own protocols: JSON-over-gRPC ImageUpload, and the gateway's /schedule route.

Users of lite-edge-cluster-scheduler point their clients here and change nothing: uploads are
saved as ``<upload>/<client-ip>/<client-ip>_<n>.<ext>`` (the counter lives in the journal), each
picture becomes a task, and its label file is pushed to ``http://<client-ip>:8888/recv_rst``.
Unlike the seed, a task is journaled before anyone is told it was accepted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesched.config import Settings
from edgesched.core.strategies import ALIASES, STRATEGIES
from edgesched.errors import BadInputError
from edgesched.filenames import display_name, safe_extension
from edgesched.journal.base import TaskRow
from edgesched.master.master import Master
from edgesched.master.payloads import write_payload
from edgesched.master.submission import Submission, check_picture, check_task_type

#: What the seed's task manager sends when a client gives no task type (Gen-A).
SEED_DEFAULT_TASKTYPE = "yolo"
SEED_STRATEGIES = ("load", "负载贪心", "roundrobin", "round_robin")


@dataclass
class SeedUpload:
    filename: str
    payload: bytes
    task_type: str
    req_id: str = ""
    total_num: int = 0
    #: the request id of the stream it came in when it carried none itself (the first one a
    #: message carried, else made up): recorded and pushed, not part of its identity
    stream_req_id: str = ""


def load_json(body: bytes) -> Any:
    """UTF-8 JSON, or ValueError: also for nesting deeper than Python parses and for strings
    that UTF-8 cannot carry (JSON may spell a lone surrogate, ``"\\ud800"``)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string is not valid Unicode (a lone surrogate)") from None
    return data


def parse_upload(body: bytes) -> SeedUpload:
    """One ImageUpload message: UTF-8 JSON ``{"filename", "content_b64", "tasktype", ...}``."""
    try:
        data = load_json(body)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise BadInputError(f"invalid json: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputError("invalid json: expected an object")
    content = data.get("content_b64")
    if not isinstance(content, str) or not content:
        raise BadInputError("missing content_b64")
    try:
        payload = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInputError(f"invalid base64 in content_b64: {exc}") from None
    filename = data.get("filename", "")
    task_type = data.get("tasktype", SEED_DEFAULT_TASKTYPE)
    req_id = data.get("req_id", "")
    total = data.get("total_num", 0)
    if not isinstance(filename, str) or not isinstance(task_type, str):
        raise BadInputError("filename and tasktype must be strings")
    return SeedUpload(
        filename=filename,
        payload=payload,
        task_type=task_type.strip() or SEED_DEFAULT_TASKTYPE,
        req_id=req_id if isinstance(req_id, str) else str(req_id),
        total_num=total if isinstance(total, int) and not isinstance(total, bool) else 0,
    )


def seed_task_type(settings: Settings, name: str) -> str:
    """The configured task type that runs a seed task-type name (``YoloV5``, ``yolo``).

    A name configured in ``[tasktypes]`` is itself; else ``master.seed_tasktypes`` maps it
    (``"YoloV5=layout"``), so the seed's clients work at the first run; else it stays unknown
    and is refused by name.
    """
    if name in settings.tasktypes:
        return name
    for entry in settings.master.seed_tasktypes:
        seed_name, _, target = entry.partition("=")
        if seed_name.strip() == name and target.strip():
            return target.strip()
    return name


def canonical_ip(value: str) -> str:
    """A client's address as one spelling: an IPv4 or IPv6 literal, never a host name.

    The seed builds folders and result URLs from this string, so anything else ("127.0.0.1/",
    "..", "host.example") would name another client's folder or be looked up in DNS. IPv4
    mapped into IPv6 is the IPv4 address; an IPv6 zone (``%eth0``) is refused.
    """
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise BadInputError(
            f"invalid ip {value[:64]!r}: must be an IPv4 or IPv6 address (no host names)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise BadInputError(f"invalid ip {value[:64]!r}: an IPv6 zone is not accepted")
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def ip_folder(canonical: str) -> str:
    """The upload folder (and file-name prefix) of a canonical address: one per address.
    IPv6's colons become dashes (``::1`` → ``--1``), which no other address spells."""
    return canonical.replace(":", "-")


def reply_path(row: TaskRow) -> str:
    """What a reply says of where a picture was saved: ``<client-ip>/<file>`` under the upload
    folder, never the server's absolute path (the seed clients only print it)."""
    path = Path(row.payload_path)
    return f"{path.parent.name}/{path.name}"


def upload_root(master: Master) -> Path:
    m = master.settings.master
    return Path(m.upload_dir) if m.upload_dir else master.data_dir / "upload"


class SeedIntake:
    """Saves seed uploads under the seed's names and journals them as tasks (through
    ``Master.submit``). Owns the per-client file number floors; it may not touch the core or
    the journal directly."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self._floors: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def _floor(self, client_ip: str, directory: Path) -> int:
        """The largest ``<ip>_<n>`` already in the folder (files left by the seed itself)."""
        if client_ip not in self._floors:
            pattern = re.compile(rf"^{re.escape(client_ip)}_(\d+)(\.[^.]*)?$")
            numbers = [
                int(m.group(1))
                for p in (directory.iterdir() if directory.is_dir() else ())
                if (m := pattern.match(p.name))
            ]
            self._floors[client_ip] = max(numbers, default=0)
        return self._floors[client_ip]

    async def upload(
        self, client_ip: str, upload: SeedUpload, strategy: str = ""
    ) -> tuple[TaskRow, str]:
        """Journals one picture; returns (task row, the saved file name)."""
        master = self.master
        client_ip = canonical_ip(client_ip)
        task_type = seed_task_type(master.settings, upload.task_type)
        check_task_type(master.settings, task_type)
        m = master.settings.master
        await asyncio.to_thread(check_picture, upload.payload, m.max_upload_bytes, m.max_pixels)
        ip = ip_folder(client_ip)
        directory = upload_root(master) / ip
        # Gen-B clients name each request; a picture resent under the same req_id and name
        # (after a master restart) is the same task, not a second one
        key = f"seed:{upload.req_id}:{upload.filename}" if upload.req_id else ""
        if key:
            existing = await master.journal.find_key(client_ip, key)
            if existing is not None:
                return existing, existing.metadata.get("seed_file", "")
        master.check_space(directory, len(upload.payload))
        async with self._lock:  # numbers are handed out in order, each once
            floor = await asyncio.to_thread(self._floor, ip, directory)
            number = await master.next_number(f"seed-upload:{ip}", floor)
        name = f"{ip}_{number}{safe_extension(upload.filename)}"
        path = directory / name
        await asyncio.to_thread(write_payload, path, upload.payload, m.durability == "full")
        metadata = {"seed_file": name, "service": upload.task_type}
        if upload.req_id or upload.stream_req_id:
            metadata["req_id"] = upload.req_id or upload.stream_req_id
        if upload.total_num:
            metadata["total_num"] = str(upload.total_num)
        row, _ = await master.submit(
            Submission(
                client_id=client_ip,
                idem_key=key or f"seed-upload:{name}",
                task_type=task_type,
                filename=display_name(upload.filename) if upload.filename else name,
                payload=upload.payload,
                metadata=metadata,
                origin="seed",
                client_addr=client_ip,
                strategy=strategy,
                payload_path=str(path),
                checked=True,
            )
        )
        if row.payload_path != str(path):  # the same request raced in twice: keep the first
            await asyncio.to_thread(path.unlink, True)
            name = row.metadata.get("seed_file", name)
        return row, name


# ---- /schedule --------------------------------------------------------------------------


class ScheduleError(Exception):
    """A /schedule request the seed would answer with 400 and this message."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


def schedule_strategy(stargety: str | None, strategy: str | None) -> str:
    """``?stargety=`` (the seed's spelling) wins over ``?strategy=``; absent or empty is load."""
    value = (stargety if stargety is not None else strategy) or ""
    key = ALIASES.get(value.strip(), value.strip())
    if key not in STRATEGIES:
        raise ScheduleError(
            f"invalid stargety parameter {value!r}; valid values: {', '.join(SEED_STRATEGIES)}"
        )
    return key


@dataclass
class ScheduleRequest:
    client_ip: str
    task_type: str
    filenames: list[str]
    req_id: str
    total_num: int


def parse_schedule(body: bytes) -> ScheduleRequest:
    try:
        data = load_json(body)
    except ValueError:
        raise ScheduleError("invalid json") from None
    if not isinstance(data, dict):
        raise ScheduleError("invalid json")
    ip, task_type = data.get("ip"), data.get("tasktype")
    if not isinstance(ip, str) or not ip or not isinstance(task_type, str) or not task_type:
        raise ScheduleError("missing required fields")
    try:
        ip = canonical_ip(ip)
    except BadInputError as exc:
        raise ScheduleError(str(exc)) from None
    names = data.get("filenames")
    if names is None and isinstance(data.get("filename"), str) and data["filename"]:
        names = [data["filename"]]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ScheduleError("missing filename(s)")
    total = data.get("total_num", len(names))
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0 or total != len(names):
        raise ScheduleError("invalid total_num or filenames size mismatch")
    req_id = data.get("req_id") or ""
    return ScheduleRequest(ip, task_type.strip(), names, str(req_id), total)


def schedule_key(request: ScheduleRequest, name: str, payload: bytes, mtime_ns: int) -> str:
    """What makes a /schedule request for one file a retry of an earlier one: the same client,
    req_id, file name, content (SHA-256) and file version (its modification time).

    A seed task manager restarted after its delivered uploads were removed numbers from
    ``<ip>_1`` again: the new picture under an old name is a new file (new time, usually new
    content), so a new task. Only a request repeated for the very same file is the old task.
    """
    digest = hashlib.sha256(payload).hexdigest()
    return f"seed-schedule:{request.req_id}:{name}:{digest}:{mtime_ns}"


@dataclass
class Scheduled:
    row: TaskRow
    new: bool  #: False: a retry of a request whose task exists (row.state says where it is)


def _read_upload(path: Path) -> tuple[bytes, int]:
    with open(path, "rb") as handle:
        payload = handle.read()
        return payload, os.fstat(handle.fileno()).st_mtime_ns


async def schedule(master: Master, request: ScheduleRequest, strategy: str) -> list[Scheduled]:
    """Journals one task per named file already in the upload directory.

    Every named file is checked before anything is journaled: a request naming a missing file
    queues nothing. The task type may be a seed name mapped by ``master.seed_tasktypes``.
    """
    task_type = seed_task_type(master.settings, request.task_type)
    check_task_type(master.settings, task_type)
    directory = upload_root(master) / ip_folder(request.client_ip)
    paths = []
    for name in request.filenames:
        base = display_name(name)
        path = directory / base
        if base != name.replace("\\", "/").rsplit("/", 1)[-1] or not path.is_file():
            raise ScheduleError(f"failed to open image file {request.client_ip}/{base}")
        paths.append((base, path))
    out = []
    for base, path in paths:  # one picture in memory at a time
        try:
            payload, mtime_ns = await asyncio.to_thread(_read_upload, path)
        except OSError:  # removed since it was checked
            raise ScheduleError(f"failed to open image file {request.client_ip}/{base}") from None
        metadata = {"seed_file": base, "service": request.task_type}
        if request.req_id:
            metadata["req_id"] = request.req_id
        row, duplicate = await master.submit(
            Submission(
                client_id=request.client_ip,
                idem_key=schedule_key(request, base, payload, mtime_ns),
                task_type=task_type,
                filename=base,
                payload=payload,
                metadata=metadata,
                origin="seed",
                client_addr=request.client_ip,
                strategy=strategy,
                payload_path=str(path),
            )
        )
        out.append(Scheduled(row, not duplicate))
    return out
