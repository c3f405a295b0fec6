"""The journal's SQLite schema, its migrations, and a task row's encoding in it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from edgesched.errors import JournalError
from edgesched.journal.base import TaskRow, from_json_value, json_value
from edgesched.kinds import TaskState

SCHEMA_VERSION = 1
JSON_FIELDS = ("detections", "timings", "errors", "metadata")
FINAL = (TaskState.DONE.value, TaskState.DEAD.value, TaskState.CANCELLED.value)

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        task_type TEXT NOT NULL,
        filename TEXT NOT NULL,
        payload_path TEXT NOT NULL,
        payload_size INTEGER NOT NULL,
        submitted_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL DEFAULT '',
        attempt INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        device_id TEXT NOT NULL DEFAULT '',
        device_type TEXT NOT NULL DEFAULT '',
        updated_ms INTEGER NOT NULL DEFAULT 0,
        finished_ms INTEGER NOT NULL DEFAULT 0,
        label TEXT NOT NULL DEFAULT '',
        detections TEXT NOT NULL DEFAULT '[]',
        timings TEXT NOT NULL DEFAULT '{}',
        errors TEXT NOT NULL DEFAULT '[]',
        error TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL DEFAULT '{}',
        origin TEXT NOT NULL DEFAULT 'native',
        strategy TEXT NOT NULL DEFAULT '',
        deadline_ms INTEGER NOT NULL DEFAULT 0,
        client_addr TEXT NOT NULL DEFAULT '',
        delivery TEXT NOT NULL DEFAULT '',
        UNIQUE (client_id, idem_key)
    );
    CREATE INDEX tasks_state ON tasks (state, submitted_ms);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        credential_sha256 TEXT NOT NULL,
        device_type TEXT NOT NULL DEFAULT '',
        joined_ms INTEGER NOT NULL DEFAULT 0
    );
    """,
}


def encode_row(row: TaskRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in TaskRow.columns()}
    for name in JSON_FIELDS:
        values[name] = json.dumps(json_value(name, values[name]), separators=(",", ":"))
    return values


def decode_row(record: Any) -> TaskRow:
    """A row as read back (a ``sqlite3.Row`` or an asyncpg ``Record``: both map names to
    values), the JSON columns decoded."""
    values = dict(record.items()) if hasattr(record, "items") else dict(record)
    for name in JSON_FIELDS:
        values[name] = from_json_value(name, json.loads(values[name]))
    return TaskRow(**values)


def encode_values(values: dict[str, Any]) -> dict[str, Any]:
    """Columns to update, the JSON ones encoded."""
    return {
        k: json.dumps(json_value(k, v), separators=(",", ":")) if k in JSON_FIELDS else v
        for k, v in values.items()
    }


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Brings the database to ``SCHEMA_VERSION``, one transaction per step; refuses a newer
    one."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, newer than this edgesched "
            f"({SCHEMA_VERSION}); upgrade edgesched instead of opening it"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={target}")
        conn.execute("COMMIT")
