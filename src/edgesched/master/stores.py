"""Which journal and payload store a master uses: the one place that chooses.

``master.journal`` empty: SQLite (``<data_dir>/edgesched.db``) and the payload log beside it.
``postgresql://...``: the PostgreSQL journal and its ``payloads`` table (asyncpg, the
``postgres`` extra, imported only then). The start's payload-log scan and ``--repair`` belong
to SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgesched import extras
from edgesched.config import Settings
from edgesched.errors import ConfigError
from edgesched.journal.base import Journal
from edgesched.master.payloadstore import PayloadStore


def uses_postgres(settings: Settings) -> bool:
    return settings.master.journal.startswith(("postgresql://", "postgres://"))


def open_stores(
    settings: Settings, on_full: Callable[[], bool] | None = None
) -> tuple[Journal, PayloadStore]:
    """The journal and payload store ``settings`` choose (not started yet). ``on_full``: what
    frees space when SQLite meets a full disk (the disk guard's reserve)."""
    m = settings.master
    if uses_postgres(settings):
        absent = extras.missing("postgres")
        if absent:
            raise ConfigError(
                f"master.journal is a PostgreSQL URL: it needs edgesched[postgres] "
                f"({', '.join(absent)} not installed): {extras.install_hint('postgres')}"
            )
        from edgesched.journal.postgres import PostgresJournal
        from edgesched.master.payloadstore import DbPayloadStore

        journal = PostgresJournal(m.journal, m.durability)
        return journal, DbPayloadStore(journal)
    from edgesched.journal.sqlite import SQLiteJournal
    from edgesched.master.payloadlog import PayloadLog

    data_dir = Path(m.data_dir)
    return (
        SQLiteJournal(data_dir / "edgesched.db", m.durability, on_full),
        PayloadLog(data_dir, m.payload_segment_mb, m.durability == "full"),
    )
