"""Runs the master: journal, core, gRPC server (client API + agent link), HTTP gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn

from edgesched import failpoints
from edgesched.config import MasterSettings, Settings
from edgesched.errors import DamagedJournalError, JournalError
from edgesched.journal.files import private_dir
from edgesched.journal.sqlite import SQLiteJournal
from edgesched.master.auth import ApiTokenInterceptor
from edgesched.master.compat.grpc import image_upload_handler
from edgesched.master.compat.intake import SeedIntake, SeedUpload, reply_path
from edgesched.master.compat.pusher import ResultPusher
from edgesched.master.http import make_http_app
from edgesched.master.intake import TaskServicer
from edgesched.master.link import AgentLinkServicer
from edgesched.master.master import Master
from edgesched.master.payloadformat import parse_ref
from edgesched.master.payloadlog import Entry, PayloadLog
from edgesched.master.payloadstore import is_db_ref
from edgesched.master.storage import DiskGuard, orphans, remove_record
from edgesched.master.stores import open_stores
from edgesched.v1 import agent_pb2_grpc, client_pb2_grpc

log = logging.getLogger("edgesched.master")

TICK_S = 0.1
PRUNE_EVERY_S = 60.0
SPACE_EVERY_S = 1.0  #: while short of space, how often the master looks whether it returned
#: the soft open-files limit is raised to the hard one, or to this when the hard one is infinite
NOFILE_WHEN_UNLIMITED = 1 << 20


def raise_open_files_limit() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard one: every connection is a descriptor, and the
    usual soft default (1,024) is reached by a thousand idle peers, after which nothing is
    accepted (health, submissions, joins). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        log.info("open files: soft limit raised from %d to %d (the hard limit)", soft, target)
        return soft, target
    log.info("open files: soft limit %s (hard %s)", soft, hard)
    return soft, soft


def server_credentials(s: MasterSettings) -> grpc.ServerCredentials:
    def read(path: str) -> bytes:
        return Path(path).read_bytes()

    return grpc.ssl_server_credentials(
        [(read(s.tls_key), read(s.tls_cert))],
        root_certificates=read(s.tls_ca) if s.tls_ca else None,
        require_client_auth=s.tls_require_client_cert,
    )


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Message limits (the link message size setting); keepalive both ways, pings permitted."""
    size = max_message_bytes
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def bind_grpc(server: grpc.aio.Server, s: MasterSettings) -> int:
    """Adds the master's gRPC port (TLS when it has a certificate); returns the port bound."""
    address = f"{grpc_host(s.bind)}:{s.port}"
    if s.tls_cert:
        return int(server.add_secure_port(address, server_credentials(s)))
    return int(server.add_insecure_port(address))


def http_socket(s: MasterSettings) -> socket.socket:
    """The gateway's listening socket (SO_REUSEADDR: a standby's and then the leader's server
    bind the same port one after the other)."""
    sock = socket.socket(socket.AF_INET6 if ":" in s.bind else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((s.bind, s.http_port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def http_tls(s: MasterSettings) -> dict[str, Any]:
    """uvicorn's TLS options from the master's settings (none without a certificate)."""
    tls: dict[str, Any] = {}
    if s.tls_cert:
        tls = {"ssl_certfile": s.tls_cert, "ssl_keyfile": s.tls_key}
        if s.tls_ca:
            tls["ssl_ca_certs"] = s.tls_ca
            tls["ssl_cert_reqs"] = (
                ssl.CERT_REQUIRED if s.tls_require_client_cert else (ssl.CERT_OPTIONAL)
            )
    return tls


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the master decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MasterServer:
    """Runs one master process: opens the journal, builds the ``Master``, serves the gRPC
    servicers (client API, agent link, the seed's upload) and the HTTP gateway, runs the
    periodic ticks, the result pusher and retention, and shuts all down in order. Owns the
    servers, the sockets, the background tasks and the journal's lifetime. It may not change
    a task or a device itself: everything goes through ``Master``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        m = settings.master
        data_dir = Path(m.data_dir)
        self.guard = DiskGuard(data_dir, m.min_free_mb, m.reserve_mb)
        self.journal, self.plog = open_stores(settings, self.guard.release)
        self.master: Master | None = None
        self.grpc_server: grpc.aio.Server | None = None
        self.pusher: ResultPusher | None = None
        self.http_server: QuietServer | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._http_task: asyncio.Task[None] | None = None
        self._http_sock: socket.socket | None = None

    async def start(self) -> None:
        s = self.settings.master
        failpoints.arm_from_env(os.environ)
        if s.raise_nofile:
            raise_open_files_limit()
        data_dir = Path(s.data_dir)
        # the reserve is given back while the master starts: opening the journal, the tokens
        # and endpoints.json then have room even on a full disk; it is taken again below
        await asyncio.to_thread(self._private_folders, data_dir)
        await asyncio.to_thread(self.guard.release)
        await self.journal.start()
        try:
            live = await self._check_records(data_dir)
        except BaseException:
            await self.journal.close()
            self.plog.close()
            raise
        master = Master(self.settings, self.journal, guard=self.guard, plog=self.plog)
        self.master = master
        restored = await master.restore()
        if restored:
            log.info("restored %d unfinished tasks from the journal", restored)
        await self._release_ended(master, live)
        self.pusher = ResultPusher(master)
        master.on_seed_done = self.pusher.push
        resumed = await self.pusher.resume()
        if resumed:
            log.info("resumed pushing %d results to seed clients", resumed)
        intake = SeedIntake(master)
        interceptor = ApiTokenInterceptor(lambda: s.auth, master.api_token.current)
        limit = s.max_link_message_bytes or s.max_upload_bytes + 1024 * 1024
        server = grpc.aio.server(options=grpc_options(limit), interceptors=[interceptor])
        client_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(master), server)
        agent_pb2_grpc.add_AgentLinkServicer_to_server(AgentLinkServicer(master), server)

        async def upload(client_ip: str, picture: SeedUpload) -> tuple[str, str]:
            row, name = await intake.upload(client_ip, picture)
            return name, reply_path(row)

        server.add_generic_rpc_handlers((image_upload_handler(upload),))
        self.grpc_port = bind_grpc(server, s)
        await server.start()
        self.grpc_server = server
        sock = http_socket(s)
        self.http_port = sock.getsockname()[1]
        self._http_sock = sock
        app = make_http_app(master, self.grpc_port, intake)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, **http_tls(s)
        )
        self.http_server = QuietServer(config)
        self._http_task = asyncio.create_task(self.http_server.serve(sockets=[sock]))
        self._tasks.append(asyncio.create_task(self._ticker()))
        self._write_endpoints()
        if not await asyncio.to_thread(self.guard.hold):
            log.error("%s", self.guard.short)

    def _private_folders(self, data_dir: Path) -> None:
        """The data folders 0700 (also ones an older version made 0755)."""
        private_dir(data_dir)
        uploads = Path(self.settings.master.upload_dir or data_dir / "upload")
        for folder in (uploads, data_dir / "intake", data_dir / "payloads", data_dir / "dead"):
            private_dir(folder)  # made here, so that no upload makes it with the umask's mode
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    private_dir(child)

    async def _check_records(self, data_dir: Path) -> dict[str, Entry]:
        """Refuses a journal that lacks tasks whose entries are in the payload log (or whose
        intake records an older master left): it was replaced, emptied or cut short, and
        acknowledged work would be lost. Returns the log's live entries of journaled tasks.

        An entry written for the transaction right after the last one recorded (``recorded``
        + 1) belongs to a submission whose commit never happened: the master died in between,
        nobody was told the task was accepted; it is released, not reported.

        SQLite only: the database store keeps rows and payloads in one transaction."""
        if not isinstance(self.journal, SQLiteJournal) or not isinstance(self.plog, PayloadLog):
            return {}
        journaled = await self.journal.task_ids()
        live = await asyncio.to_thread(self.plog.open)
        recorded = self.journal.recorded
        lost: list[str] = []
        unused: list[str] = []
        for task_id, entry in live.items():
            if task_id in journaled:
                continue
            if recorded >= 0 and entry.commit == recorded + 1:
                log.warning(
                    "released the payload of submission %s: it was never committed", task_id
                )
                unused.append(task_id)
            else:
                lost.append(task_id)
        legacy = await asyncio.to_thread(orphans, data_dir, journaled, recorded)
        if lost or legacy:
            names = lost + [p.stem for p in legacy]
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise DamagedJournalError(
                f"journal {self.journal.path} lacks {len(names)} acknowledged tasks whose "
                f"payloads are kept (in the payload log {data_dir / 'payloads'} or intake "
                f"records in {data_dir / 'intake'}: {shown}); it was replaced, emptied or cut "
                "short. Run `edgesched master --repair` to journal them again, or restore a "
                "backup (docs/operations.md)"
            )
        self.plog.release(unused)  # written with the first commit (no hook runs before)
        return {k: v for k, v in live.items() if k in journaled}

    async def _release_ended(self, master: Master, live: dict[str, Entry]) -> None:
        """Log entries of tasks the journal holds as ended (the master stopped before their
        release was written) are released; a dead task's payload is copied out first."""
        for task_id in live:
            if task_id in master.rows:
                continue
            row = await self.journal.get(task_id)
            if row is not None and row.state == "dead" and parse_ref(row.payload_path):
                master.ends.keep_dead(row, None)
            else:
                master.ends.release_after_commit(task_id)

    def _write_endpoints(self) -> None:
        write_endpoints(self.settings.master.data_dir, self.grpc_port, self.http_port)

    async def _ticker(self) -> None:
        assert self.master is not None
        next_prune = 0.0
        next_space = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            self.master.tick()
            now = self.master.clock.monotonic()
            if now >= next_space and self.guard.short and not self.journal.fault:
                next_space = now + SPACE_EVERY_S
                if await asyncio.to_thread(self.guard.hold):
                    log.warning("space returned: the reserve is set aside, new tasks are taken")
            if now >= next_prune and not self.journal.fault:  # pruning frees space too
                next_prune = now + PRUNE_EVERY_S
                try:
                    await self.prune()
                    await self.master.forget_gone()
                except JournalError as exc:  # the journal holds the fault; tried again later
                    log.warning("retention: %s", exc)

    async def prune(self) -> int:
        """Retention: finished tasks past the TTL or the row cap leave the journal and disk."""
        assert self.master is not None
        m = self.settings.master
        before = self.master.clock.wall_ms() - int(m.retention_s * 1000)
        data_dir = Path(m.data_dir)

        plog = self.plog

        def forget(gone: list[tuple[str, str]]) -> None:
            # their log entries (still live when a dead task's payload could not be copied
            # out) and an older master's intake records go before their rows: either left
            # without its row would read as lost work at the next start
            plog.release([task_id for task_id, _ in gone])
            for task_id, _ in gone:
                remove_record(data_dir, task_id)

        pruned = await self.journal.prune(before, m.retention_rows, forget)
        if pruned:
            await asyncio.to_thread(_remove_files, [path for _, path in pruned])
            log.info("retention: pruned %d finished tasks", len(pruned))
        return len(pruned)

    async def stop(self) -> None:
        if self.master is not None:
            self.master.stopping = True
            for session in list(self.master.sessions.values()):
                session.close("master stopping")
        if self.http_server is not None:
            self.http_server.should_exit = True
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                if self._http_task is not None:
                    await asyncio.wait_for(self._http_task, 5)
            if self._http_sock is not None:
                self._http_sock.close()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.pusher is not None:
            await self.pusher.close()
        await self.journal.close()
        self.plog.close()  # the journal's thread is gone: what it staged is written here


def _remove_files(paths: list[str]) -> None:
    """Pruned tasks' files (a dead task's copy, a kept seed upload); a payload-log entry is
    not a file (released at the task's end)."""
    for path in paths:
        if parse_ref(path) is not None or is_db_ref(path):
            continue
        with contextlib.suppress(OSError):
            Path(path).unlink()


def grpc_host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else bind


def write_endpoints(data_dir: str, grpc_port: int, http_port: int) -> None:
    """Writes the ports actually bound (useful with port 0) next to the journal."""
    path = Path(data_dir) / "endpoints.json"
    data = {"grpc_port": grpc_port, "http_port": http_port}
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(json.dumps(data))
        tmp.replace(path)
    except OSError as exc:  # the master runs on; its ports are in its first output line
        log.error("cannot write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
