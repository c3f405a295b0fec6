"""The PostgreSQL journal's schema, its migrations, and a task row's encoding in it.

The tables are SQLite's (``schema``) with PostgreSQL types, plus what several masters share:
``payloads`` (every payload's bytes, so that any master can serve any task), ``lease`` (the
leader's lease and its fencing token) and ``edgesched_fence`` (the check every write
transaction of a fenced journal starts with). JSON columns are TEXT, not JSONB: the journal
never queries into them, and JSONB would parse every value on every write.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

from edgesched.errors import JournalError
from edgesched.journal.base import TaskRow, json_value
from edgesched.journal.schema import JSON_FIELDS

SCHEMA_VERSION = 1
#: the SQLSTATE ``edgesched_fence`` raises: this master's token is not the lease's
FENCED_SQLSTATE = "EF001"
#: the advisory lock that makes masters starting together migrate one after the other
MIGRATION_LOCK = 0x6564_6765_7363_6864  # "edgeschd"

#: what several masters share, created by whichever comes first: the journal's migration 1, or
#: a standby's lease (``master.lease``), which runs before any master opens the journal; so
#: every statement may find its object made already
SHARED = [
    """CREATE TABLE IF NOT EXISTS lease (
        name TEXT PRIMARY KEY,
        token BIGINT NOT NULL DEFAULT 0,
        holder TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        backend_pid INTEGER NOT NULL DEFAULT 0,
        renewed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
    )""",
    "INSERT INTO lease (name) VALUES ('leader') ON CONFLICT DO NOTHING",
    """CREATE OR REPLACE FUNCTION edgesched_fence(t BIGINT) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM lease WHERE name = 'leader' AND token = t FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'edgesched: fenced: write token % is not the lease''s', t
                USING ERRCODE = 'EF001';
        END IF;
    END
    $$""",
    # the join and API tokens every master uses (``master.sharedtokens``)
    "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
]

COLUMNS = TaskRow.columns()
#: each column's PostgreSQL type (an ``int`` field is BIGINT, everything else TEXT)
TYPES = {f.name: ("bigint" if f.type in ("int", int) else "text") for f in fields(TaskRow)}

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            idem_key TEXT NOT NULL,
            task_type TEXT NOT NULL,
            filename TEXT NOT NULL,
            payload_path TEXT NOT NULL,
            payload_size BIGINT NOT NULL,
            submitted_ms BIGINT NOT NULL,
            state TEXT NOT NULL,
            payload_sha256 TEXT NOT NULL DEFAULT '',
            attempt BIGINT NOT NULL DEFAULT 0,
            failures BIGINT NOT NULL DEFAULT 0,
            device_id TEXT NOT NULL DEFAULT '',
            device_type TEXT NOT NULL DEFAULT '',
            updated_ms BIGINT NOT NULL DEFAULT 0,
            finished_ms BIGINT NOT NULL DEFAULT 0,
            label TEXT NOT NULL DEFAULT '',
            detections TEXT NOT NULL DEFAULT '[]',
            timings TEXT NOT NULL DEFAULT '{}',
            errors TEXT NOT NULL DEFAULT '[]',
            error TEXT NOT NULL DEFAULT '',
            metadata TEXT NOT NULL DEFAULT '{}',
            origin TEXT NOT NULL DEFAULT 'native',
            strategy TEXT NOT NULL DEFAULT '',
            deadline_ms BIGINT NOT NULL DEFAULT 0,
            client_addr TEXT NOT NULL DEFAULT '',
            delivery TEXT NOT NULL DEFAULT '',
            UNIQUE (client_id, idem_key)
        )""",
        "CREATE INDEX tasks_state ON tasks (state, submitted_ms)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        """CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            credential_sha256 TEXT NOT NULL,
            device_type TEXT NOT NULL DEFAULT '',
            joined_ms BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE TABLE payloads (task_id TEXT PRIMARY KEY, data BYTEA NOT NULL)",
        # pictures do not compress: storing them out of line without trying saves the CPU
        "ALTER TABLE payloads ALTER COLUMN data SET STORAGE EXTERNAL",
        *SHARED,
    ],
}

#: one statement for a whole batch of new rows: a column array each; a repeated key is skipped
INSERT_MANY = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{TYPES[name]}[]" for i, name in enumerate(COLUMNS))
    + ") ON CONFLICT (client_id, idem_key) DO NOTHING RETURNING id"
)
#: the rows already holding the keys a batch did not insert
BY_KEYS = (
    "SELECT * FROM tasks WHERE (client_id, idem_key) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))"
)
INSERT_ONE = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
    "ON CONFLICT (client_id, idem_key) DO NOTHING RETURNING id"
)


def redact(dsn: str) -> str:
    """The DSN without its password (what logs and messages may show)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)


def encode_row(row: TaskRow) -> list[Any]:
    """The row's values in ``COLUMNS`` order, the JSON ones encoded."""
    out: list[Any] = []
    for name in COLUMNS:
        value = getattr(row, name)
        if name in JSON_FIELDS:
            value = json.dumps(json_value(name, value), separators=(",", ":"))
        out.append(value)
    return out


async def migrate(conn: Any, where: str) -> None:
    """Brings the database to ``SCHEMA_VERSION``, one transaction per step, under an advisory
    lock (masters starting together: the second waits, then finds the work done); refuses a
    newer one. ``conn``: an asyncpg connection."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM schema_version")
        version = int(found or 0)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {where} has schema version {version}, newer than this edgesched "
                f"({SCHEMA_VERSION}); upgrade edgesched instead of opening it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with conn.transaction():  # a savepoint per step
                for statement in MIGRATIONS[target]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", target)
