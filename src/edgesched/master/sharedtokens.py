"""The join and API tokens shared by several masters through their PostgreSQL database.

Clients and agents keep their token when the leader changes, so every master must accept the
same ones: the first leader stores its tokens in the ``secrets`` table (made with the lease's
schema), every master adopts them when elected and writes them to its token files (so that
``edgesched token show`` works on each machine, and the master reads them as always). A
rotation (``edgesched token rotate`` on the leader's machine) reaches the database at the
leader's next renewal, and the other masters at their election.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgesched.master.token import TOKEN_FILES, read_token, store_token, write_token

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("edgesched.master")

#: the secrets table's row name of each token kind
NAMES = {kind: f"{kind}-token" for kind in TOKEN_FILES}


class SharedTokens:
    """Keeps the token files of one master's data directory and the database's copies equal.
    Owns nothing but what it last saw of the files."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._seen: dict[str, str] = {}  #: kind → the value last agreed with the database

    async def adopt(self, conn: asyncpg.Connection) -> bool:
        """At election: the database's tokens become this master's files; where the database
        has none yet, this master's (made now if it has none either) are stored. Returns True
        when this master made a new join token (the first leader: shown once, as today)."""
        created = False
        async with conn.transaction():
            for kind, name in NAMES.items():
                row = await conn.fetchrow(
                    "SELECT value FROM secrets WHERE name = $1 FOR UPDATE", name
                )
                if row is not None:
                    value = str(row["value"])
                    if await asyncio.to_thread(read_token, self.data_dir, kind) != value:
                        await asyncio.to_thread(store_token, self.data_dir, kind, value)
                else:
                    mine = await asyncio.to_thread(read_token, self.data_dir, kind)
                    if mine:
                        value = mine
                    else:
                        value = await asyncio.to_thread(write_token, self.data_dir, kind)
                        created = created or kind == "join"
                    await conn.execute(
                        "INSERT INTO secrets (name, value) VALUES ($1, $2)", name, value
                    )
                self._seen[kind] = value
        return created

    async def publish(self, conn: asyncpg.Connection, fence: int) -> None:
        """The leader, now and then: a token rotated in its files is stored for the others
        (fenced like the journal's writes: a deposed leader's rotation is refused)."""
        for kind, name in NAMES.items():
            value = await asyncio.to_thread(read_token, self.data_dir, kind)
            if value and value != self._seen.get(kind):
                async with conn.transaction():
                    await conn.execute("SELECT edgesched_fence($1)", fence)
                    await conn.execute(
                        "INSERT INTO secrets (name, value) VALUES ($1, $2) "
                        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                        name,
                        value,
                    )
                self._seen[kind] = value
                log.info("the rotated %s token is shared with the other masters", kind)
