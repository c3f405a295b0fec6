"""A master among several on one PostgreSQL journal: standby → leader → standby.

The process starts as a standby (``StandbyServers`` on its ports, answering with where the
leader is) and tries the lease every ``lease_renew_s``. Elected, it adopts the shared tokens,
opens the journal with the lease's token as its fence, and runs the full ``MasterServer`` on
the same ports: it restores the unfinished tasks from the journal exactly as a restarted master
does, and agents reconnect and reconcile as with one. Deposed (its renewal finds the lease
taken, or the journal reports a fenced write), it stops that master and is a standby again.
Stopped (SIGTERM), it stops the master and gives the lease up, so a standby takes over at once.

With a SQLite journal none of this runs: ``edgesched master`` is the single master it always was.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from edgesched.config import Settings
from edgesched.errors import ConfigError, FencedError, JournalUnavailableError
from edgesched.journal.files import private_dir
from edgesched.master.lease import Holder, Lease
from edgesched.master.server import MasterServer
from edgesched.master.sharedtokens import SharedTokens
from edgesched.master.standby import StandbyServers

log = logging.getLogger("edgesched.master")

WILDCARDS = ("", "0.0.0.0", "::", "[::]")
FENCED = "EF001"  #: the SQLSTATE of edgesched_fence's refusal
JITTER = 0.2  #: standbys spread their tries over ±20 % of lease_renew_s
BIND_TRIES = 50
BIND_PAUSE_S = 0.2

#: (settings, fencing token, on_fenced) → the leader's MasterServer, not started yet
ServerFactory = Callable[[Settings, int, Callable[[str], None]], MasterServer]


def leader_server(settings: Settings, fence: int, on_fenced: Callable[[str], None]) -> MasterServer:
    """The leader's master, and the one place its PostgreSQL journal is given the lease's
    token as its fence (every write transaction then starts with ``SELECT
    edgesched_fence(token)``) and told whom to call when a write is refused (``on_fenced``:
    the leader steps down)."""
    from edgesched.journal.postgres import PostgresJournal

    server = MasterServer(settings)
    journal = server.journal
    if not isinstance(journal, PostgresJournal):  # Roles runs for a postgresql journal only
        raise ConfigError(f"several masters need a PostgreSQL journal, not {type(journal)}")
    journal.fence = fence
    journal.on_fenced = on_fenced
    return server


def instance_id(rng: random.Random) -> str:
    """What this master writes as the lease's holder: readable, and unique per process run."""
    return f"{socket.gethostname()}:{os.getpid()}:{rng.getrandbits(32):08x}"


def advertised(settings: Settings, grpc_port: int, http_port: int) -> str:
    """The lease's address column: where clients and agents reach this master when it leads;
    "" when it binds a wildcard address and no ``master.advertise`` is set (then standbys
    cannot say where the leader is, and say so)."""
    m = settings.master
    host = m.advertise or ("" if m.bind in WILDCARDS else m.bind)
    if not host:
        return ""
    return json.dumps({"host": host, "grpc_port": grpc_port, "http_port": http_port})


class Roles:
    """Runs one master process of several. Owns the lease (and its connection), the standby
    servers while it is a standby and the ``MasterServer`` while it leads; ``run`` returns
    when ``stop`` is set, with all of them stopped and the lease given up.

    ``make_server`` makes the leader's master with its fenced journal (``leader_server``);
    ``on_elected`` is called with the started ``MasterServer`` and whether this master made
    the join token; ``rng`` spreads the standbys' tries and names the instance."""

    def __init__(
        self,
        settings: Settings,
        make_server: ServerFactory = leader_server,
        rng: random.Random | None = None,
        on_elected: Callable[[MasterServer, bool], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = copy.deepcopy(settings)  #: its ports become the bound ones (port 0)
        self.make_server = make_server
        self.rng = rng or random.Random()
        self.on_elected = on_elected
        self.instance = instance_id(self.rng)
        m = self.settings.master
        self.lease = Lease(m.journal, self.instance, "", m.lease_s)
        self.tokens = SharedTokens(m.data_dir)
        self.role = "starting"  #: "standby", "leader"
        self.holder: Holder | None = None  #: the lease as last read (standby)
        self.standby: StandbyServers | None = None
        self.server: MasterServer | None = None
        self.elected = asyncio.Event()  #: set while this master leads (tests wait on it)
        self.deposed = asyncio.Event()
        self.terms = 0  #: how many times this master was elected

    @property
    def grpc_port(self) -> int:
        return self.settings.master.port

    @property
    def http_port(self) -> int:
        return self.settings.master.http_port

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(private_dir, Path(self.settings.master.data_dir))
        try:
            while not stop.is_set():
                if await self._serve_as_standby(stop):
                    await self._lead(stop)
        finally:
            await self._stop_standby()
            if self.server is not None:
                await self._stop_server()
            with contextlib.suppress(JournalUnavailableError):
                await self.lease.step_down()
            await self.lease.close()

    # ---- standby -------------------------------------------------------------------------

    async def _serve_as_standby(self, stop: asyncio.Event) -> bool:
        """Answers as a standby until elected (True) or stopped (False)."""
        self.role = "standby"
        self.holder = None  #: not itself, after a term: read again below
        self.standby = await self._bind_standby(stop)
        if self.standby is None:
            return False
        m = self.settings.master
        # port 0 is bound once: the leader's servers and later terms use the same ports
        m.port, m.http_port = self.standby.grpc_port, self.standby.http_port
        self.lease.address = advertised(self.settings, m.port, m.http_port)
        if not self.lease.address:
            log.warning(
                "master.bind %r is a wildcard and master.advertise is not set: when this "
                "master leads, the standbys cannot tell clients and agents where it is",
                m.bind,
            )
        log.info("standby master %s on gRPC %d, HTTP %d", self.instance, m.port, m.http_port)
        prepared = False
        unreachable = False
        try:
            while not stop.is_set():
                try:
                    if not prepared:
                        await self.lease.prepare()
                        prepared = True
                    if await self.lease.take():
                        return True
                    self.holder = await self.lease.read()
                    if unreachable:
                        log.warning("the journal's database is reachable again")
                    unreachable = False
                except JournalUnavailableError as exc:
                    if not unreachable:
                        log.warning("standby: %s (trying again)", exc)
                    unreachable = True
                spread = 1 + self.rng.uniform(-JITTER, JITTER)
                await _pause((stop,), m.lease_renew_s * spread)
            return False
        finally:
            await self._stop_standby()

    async def _bind_standby(self, stop: asyncio.Event) -> StandbyServers | None:
        """The standby's servers on the master's ports. The leader's servers, just stopped,
        may hold a port a moment longer: tried a bounded number of times (None: stopped)."""
        for attempt in range(BIND_TRIES):
            servers = StandbyServers(self.settings, lambda: self.holder)
            try:
                await servers.start()
                return servers
            except (OSError, RuntimeError) as exc:  # grpc says RuntimeError("Failed to bind")
                await servers.stop()
                if attempt == BIND_TRIES - 1:
                    raise
                log.warning("standby: cannot bind yet (%s); trying again", exc)
            if await _pause((stop,), BIND_PAUSE_S):
                return None
        return None

    async def _stop_standby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is not None:
            await standby.stop()

    # ---- leader --------------------------------------------------------------------------

    async def _lead(self, stop: asyncio.Event) -> None:
        m = self.settings.master
        token = self.lease.token
        self.terms += 1
        log.warning("elected leader (lease token %d)", token)
        self.deposed.clear()
        loop = asyncio.get_running_loop()

        def on_fenced(message: str) -> None:
            # may be called from the journal's thread
            log.error("a journal write was refused: %s; stepping down", message)
            loop.call_soon_threadsafe(self.deposed.set)

        away: tuple[type[BaseException], ...] = (JournalUnavailableError, *_away())
        try:
            created = await self.tokens.adopt(await self.lease.connection())
        except away as exc:
            log.warning("elected, but the shared tokens cannot be read: %s; stepping down", exc)
            await self._give_up()
            return
        server = self.make_server(self.settings, token, on_fenced)
        self.server = server
        try:
            await server.start()
        except (JournalUnavailableError, FencedError) as exc:
            # the database went away (or another master took over) while this one started:
            # a standby again, it tries anew; anything else ends the process as for one master
            log.warning("elected, but the master could not start: %s; stepping down", exc)
            await self._stop_server()
            await self._give_up()
            await _pause((stop,), m.lease_renew_s)
            return
        except BaseException:
            await self._stop_server()
            await self._give_up()
            raise
        self.role = "leader"
        self.elected.set()
        if self.on_elected is not None:
            await self.on_elected(server, created)
        try:
            while not await _pause((stop, self.deposed), m.lease_renew_s):
                try:
                    if not await self.lease.renew():
                        log.error("lost the lease (another master took it): stepping down")
                        return
                    await self.tokens.publish(await self.lease.connection(), token)
                except JournalUnavailableError as exc:
                    # it goes on leading: it can write nothing meanwhile, and the fence keeps
                    # a late write out once another master has taken over
                    log.warning("cannot renew the lease: %s", exc)
                except Exception as exc:
                    if getattr(exc, "sqlstate", "") == FENCED:
                        log.error("fenced: %s; stepping down", exc)
                        return
                    log.warning("cannot share a rotated token: %s", exc)
        finally:
            self.elected.clear()
            self.role = "standby"
            await self._stop_server()
            await self._give_up()  # nothing when it lost the lease: the token is not its own

    async def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            try:
                await server.stop()
            except Exception:
                log.exception("stopping the master")

    async def _give_up(self) -> None:
        with contextlib.suppress(JournalUnavailableError):
            await self.lease.step_down()


def _away() -> tuple[type[BaseException], ...]:
    from edgesched.master.lease import away_errors

    return away_errors()


async def _pause(events: tuple[asyncio.Event, ...], seconds: float) -> bool:
    """Waits ``seconds`` or until one of ``events`` is set; True when one is."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return any(e.is_set() for e in events)
