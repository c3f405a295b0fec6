"""The throwaway PostgreSQL server the PostgreSQL tests, chaos and benchmarks use: it starts as
an unprivileged user, keeps its data across a restart and a crash, and gives each test its own
database."""

from __future__ import annotations

from edgesched.tools.testing.pgserver import PgServer


def test_a_database_of_its_own_survives_a_restart_and_a_crash(
    pg_server: PgServer, pg_dsn: str
) -> None:
    name = pg_dsn.rsplit("/", 1)[1]
    assert pg_dsn.startswith("postgresql://edgesched@127.0.0.1:")
    pg_server.psql(name, "CREATE TABLE kept (v INTEGER); INSERT INTO kept VALUES (41)")
    pg_server.restart()
    assert pg_server.psql(name, "SELECT v + 1 FROM kept").strip() == "42"
    pg_server.kill()
    pg_server.start()
    assert pg_server.psql(name, "SELECT count(*) FROM kept").strip() == "1"
    assert pg_server.create_database() != pg_dsn
