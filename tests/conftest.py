from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgesched.tools.testing import pgserver
from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings
from edgesched.tools.testing.pgserver import PgServer


@pytest.fixture
async def make_cluster(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, InProcessCluster]]]:
    """Starts in-process clusters; closes every one of them (agents, servers, journal)."""
    made: list[InProcessCluster] = []

    async def factory(**scheduling: Any) -> InProcessCluster:
        cluster = InProcessCluster(tmp_path, master_settings(tmp_path, **scheduling))
        made.append(cluster)
        await cluster.start()
        return cluster

    yield factory
    for cluster in made:
        await cluster.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the session (Debian's package, initdb in a temp
    folder, run as an unprivileged user when we are root). Skipped with the reason where it
    cannot run; under CI=true (where `make deps-system` installed it) that is a failure."""
    why = pgserver.available()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests cannot run under CI: {why}")
        pytest.skip(why)
    server = PgServer(durable=False)
    try:
        server.start()
    except pgserver.PgUnavailable as exc:
        server.close()
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(str(exc))
    yield server
    server.close()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """The DSN of a new, empty database on the session's server (one per test)."""
    return pg_server.create_database()
