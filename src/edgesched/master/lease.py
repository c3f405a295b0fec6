"""The leader's lease in the shared PostgreSQL database: who leads, where, and the fencing token
every write of the leader carries (docs/operations.md "High availability").

One row, ``lease`` name='leader'. Taking it bumps ``token``; the journal of the leader starts
each write transaction with ``SELECT edgesched_fence(token)``, which takes a share lock on the
row and fails (SQLSTATE EF001) once another master took it: a deposed leader's late write is
refused by the database. Time is the database's (``now()``), never a master's clock.

asyncpg is imported here only, and this module only when a postgresql journal is chosen.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgesched.errors import JournalError, JournalUnavailableError
from edgesched.journal.pgschema import MIGRATION_LOCK, SHARED

if TYPE_CHECKING:
    import asyncpg

CONNECT_TIMEOUT_S = 5.0
#: a statement that takes longer than this counts as the database being away
STATEMENT_TIMEOUT_S = 5.0

#: the tables and the function the lease needs, as the journal's migration 1 makes them,
#: under the same advisory lock: whichever runs first creates them, the other finds them
SCHEMA = ";\n".join(SHARED)

#: a standby takes the lease when nobody holds it; when it expired and the database has been up
#: for a lease (a restart gives the leader that long to come back); or when the holder's
#: connection is gone and it renewed since the database started (a SIGKILLed leader)
TAKE = """
UPDATE lease SET token = token + 1, holder = $1, address = $2, backend_pid = pg_backend_pid(),
    renewed_at = now(), expires_at = now() + make_interval(secs => $3)
WHERE name = 'leader' AND (
    holder = ''
    OR (expires_at < now() AND now() > pg_postmaster_start_time() + make_interval(secs => $3))
    OR (renewed_at > pg_postmaster_start_time()
        AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = lease.backend_pid))
)
RETURNING token
"""

RENEW = """
UPDATE lease SET renewed_at = now(), expires_at = now() + make_interval(secs => $2),
    backend_pid = pg_backend_pid()
WHERE name = 'leader' AND token = $1
RETURNING token
"""

STEP_DOWN = """
UPDATE lease SET holder = '', expires_at = '-infinity' WHERE name = 'leader' AND token = $1
"""

READ = "SELECT token, holder, address FROM lease WHERE name = 'leader'"


@dataclass(frozen=True)
class Leader:
    """Where the leader serves (the lease row's address), as clients and agents reach it."""

    host: str
    grpc_port: int
    http_port: int

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "grpc_port": self.grpc_port, "http_port": self.http_port}

    @classmethod
    def parse(cls, text: str) -> Leader | None:
        """The address column; None when empty (no advertised address) or not understood."""
        try:
            data = json.loads(text) if text else None
            if not isinstance(data, dict) or not data.get("host"):
                return None
            return cls(str(data["host"]), int(data["grpc_port"]), int(data["http_port"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Holder:
    """The lease row as read: its token, holder (a master's instance id, "" = nobody) and
    where that master serves (None when it advertised no address)."""

    token: int
    holder: str
    leader: Leader | None


def away_errors() -> tuple[type[BaseException], ...]:
    """What asyncpg raises when the database is away (down, restarting, unreachable, too
    slow), as opposed to an error in what was asked."""
    import asyncpg

    return (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.InterfaceError,
    )


def _unavailable(exc: BaseException) -> JournalUnavailableError:
    return JournalUnavailableError(f"the journal's database cannot be reached: {exc}")


class Lease:
    """This master's side of the lease, on a connection of its own (its backend pid is what a
    standby checks to see that the leader is gone). Owns that connection, reopened when lost;
    every method raises ``JournalUnavailableError`` when the database cannot be reached."""

    def __init__(self, dsn: str, instance: str, address: str, lease_s: float) -> None:
        self.dsn = dsn
        self.instance = instance  #: this master's id, written as ``holder``
        self.address = address  #: JSON {"host", "grpc_port", "http_port"}, or "" (unknown)
        self.lease_s = lease_s
        self.token = 0  #: the token this master holds (0: it does not lead)
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        import asyncpg

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        try:
            self._conn = await asyncpg.connect(
                self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S
            )
        except (*away_errors(), asyncpg.PostgresError) as exc:
            raise _unavailable(exc) from exc
        return self._conn

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await self._connection()
        try:
            return list(await conn.fetch(sql, *args))
        except away_errors() as exc:
            await self._drop()
            raise _unavailable(exc) from exc
        except asyncpg.PostgresError as exc:  # refused: rights, a table changed by hand
            raise JournalError(f"the lease in the journal's database: {exc}") from exc

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def prepare(self) -> None:
        """Creates the lease's table, row and fence function (and the shared secrets' table)
        if missing, under the schema's advisory lock (masters may start together)."""
        import asyncpg

        conn = await self._connection()
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute(SCHEMA)
        except away_errors() as exc:
            await self._drop()
            raise _unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            raise JournalError(
                f"cannot create the lease's table and function in the journal's database: {exc}"
            ) from exc

    async def take(self) -> bool:
        """Tries to become the leader; True when this master now holds the lease."""
        rows = await self._run(TAKE, self.instance, self.address, self.lease_s)
        if rows:
            self.token = int(rows[0]["token"])
            return True
        return False

    async def renew(self) -> bool:
        """Extends the lease; False when it was lost (another master took it)."""
        if not self.token:
            return False
        rows = await self._run(RENEW, self.token, self.lease_s)
        if not rows:
            self.token = 0
            return False
        return True

    async def step_down(self) -> None:
        """Gives the lease up at once (a standby takes it at its next try)."""
        if self.token:
            token, self.token = self.token, 0
            await self._run(STEP_DOWN, token)

    async def read(self) -> Holder:
        rows = await self._run(READ)
        if not rows:
            return Holder(0, "", None)
        row = rows[0]
        return Holder(int(row["token"]), str(row["holder"]), Leader.parse(str(row["address"])))

    async def connection(self) -> asyncpg.Connection:
        """The lease's connection (the shared secrets use it too)."""
        return await self._connection()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
