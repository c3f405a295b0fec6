"""The journal's contract, on memory, SQLite and PostgreSQL alike (a real throwaway server):
durable on return, duplicates, a bad item in a batch, update and after-commit order, flush,
retention, counters, agents, pending deliveries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgesched.journal import MemoryJournal, SQLiteJournal, TaskRow

KINDS = ["memory", "sqlite", "postgres"]


def row(task_id: str, key: str, submitted: int = 1, client: str = "c") -> TaskRow:
    return TaskRow(
        id=task_id,
        client_id=client,
        idem_key=key,
        task_type="layout",
        filename="a.png",
        payload_path="/tmp/x",
        payload_size=3,
        submitted_ms=submitted,
    )


def opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Makes journals of ``kind`` on one store (a second one reopens what the first wrote)."""
    if kind == "postgres":
        from edgesched.journal.postgres import PostgresJournal

        dsn = request.getfixturevalue("pg_dsn")
        return lambda: PostgresJournal(dsn)
    if kind == "sqlite":
        return lambda: SQLiteJournal(tmp_path / "j.db")
    memory = MemoryJournal()
    return lambda: memory


@pytest.fixture(params=KINDS)
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    j = opener(request.param, request, tmp_path)()
    await j.start()
    yield j
    await j.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_insert_is_durable_when_it_returns(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    make = opener(kind, request, tmp_path)
    first = make()
    await first.start()
    await first.insert(row("t1", "k1"))
    first.update("t1", {"state": "running", "attempt": 2})
    await first.close()
    second = make()
    await second.start()
    try:
        stored = await second.get("t1")
        assert stored is not None and stored.state == "running" and stored.attempt == 2
        assert await second.task_ids() == {"t1"}
    finally:
        await second.close()


async def test_insert_many_keeps_order_duplicates_and_one_bad_item_apart(journal: Any) -> None:
    await journal.insert(row("t0", "k0"))

    def bad() -> None:
        raise ValueError("this item's payload could not be staged")

    out = await journal.insert_many(
        [
            (row("t1", "k1"), None),
            (row("t2", "k0"), None),  # a key already journaled
            (row("t3", "k3"), bad),
            (row("t4", "k1"), None),  # a key repeated inside the batch
            (row("t5", "k5"), None),
        ]
    )
    assert out[0][0].id == "t1" and out[0][1] is False
    assert out[1][0].id == "t0" and out[1][1] is True
    assert isinstance(out[2], ValueError)
    assert out[3][0].id == "t1" and out[3][1] is True
    assert out[4][0].id == "t5" and out[4][1] is False
    assert await journal.task_ids() == {"t0", "t1", "t5"}
    assert await journal.insert_many([]) == []


async def test_a_row_not_inserted_has_its_staging_undone(journal: Any) -> None:
    undone: list[str] = []

    def stage(name: str) -> Callable[[], Callable[[], None]]:
        return lambda: lambda: undone.append(name)

    await journal.insert(row("t1", "k1"), stage("first"))
    stored, duplicate = await journal.insert(row("t2", "k1"), stage("second"))
    assert duplicate and stored.id == "t1" and undone == ["second"]


async def test_find_key_and_keys_are_per_client(journal: Any) -> None:
    await journal.insert(row("t1", "k", client="a"))
    _, duplicate = await journal.insert(row("t2", "k", client="b"))
    assert not duplicate
    found = await journal.find_key("b", "k")
    assert found is not None and found.id == "t2"
    assert await journal.find_key("c", "k") is None


async def test_updates_and_after_commit_actions_keep_their_order(journal: Any) -> None:
    await journal.insert(row("t1", "k1"))
    seen: list[str] = []
    for i in range(50):
        journal.update("t1", {"attempt": i, "label": f"l{i}"})
        if i % 10 == 9:
            journal.after_commit(lambda i=i: seen.append(f"after {i}"))
    journal.update("t1", {"state": "done", "finished_ms": 7})
    await journal.flush()
    stored = await journal.get("t1")
    assert stored.attempt == 49 and stored.label == "l49" and stored.state == "done"
    assert seen == [f"after {i}" for i in (9, 19, 29, 39, 49)]


async def test_prune_keeps_unfinished_and_pending_and_hands_over_what_goes(journal: Any) -> None:
    for i in range(6):
        await journal.insert(row(f"t{i}", f"k{i}", submitted=i))
    journal.update("t0", {"state": "done", "finished_ms": 10})
    journal.update("t1", {"state": "dead", "finished_ms": 20})
    journal.update("t2", {"state": "cancelled", "finished_ms": 30})
    journal.update("t3", {"state": "done", "finished_ms": 5, "delivery": "pending"})
    journal.update("t4", {"state": "done", "finished_ms": 40})
    await journal.flush()
    told: list[list[tuple[str, str]]] = []
    gone = await journal.prune(before_ms=15, keep_rows=2, forget=told.append)
    assert sorted(t for t, _ in gone) == ["t0", "t1"]  # t0 by age, t1 beyond the 2 newest
    assert told and sorted(told[0]) == sorted(gone)
    assert await journal.task_ids() == {"t2", "t3", "t4", "t5"}
    assert [r.id for r in await journal.pending_deliveries()] == ["t3"]
    assert await journal.prune(before_ms=0, keep_rows=100) == []


async def test_counters_and_agents(journal: Any) -> None:
    assert await journal.next_counter("n") == 1
    assert await journal.next_counter("n", floor=10) == 11
    assert await journal.next_counter("m") == 1
    await journal.add_agent("a1", "h1", "rk3588")
    await journal.add_agent("a2", "h2", "cpu")
    await journal.add_agent("a1", "h3", "rk3588")  # admitted again: the new credential
    assert await journal.agents() == {"a1": "h3", "a2": "h2"}
    await journal.remove_agents(["a1", "nobody"])
    assert await journal.agents() == {"a2": "h2"}


async def test_pending_deliveries_oldest_first(journal: Any) -> None:
    for i in range(3):
        await journal.insert(row(f"t{i}", f"k{i}"))
    journal.update("t2", {"state": "done", "delivery": "pending", "finished_ms": 1})
    journal.update("t0", {"state": "done", "delivery": "pending", "finished_ms": 2})
    journal.update("t1", {"state": "done", "delivery": "delivered", "finished_ms": 3})
    await journal.flush()
    assert [r.id for r in await journal.pending_deliveries()] == ["t2", "t0"]


async def test_rows_come_back_as_they_went_in(journal: Any) -> None:
    original = row("t1", "k1")
    original.metadata = {"a": "é", "b": "\u2603"}
    original.timings = {"x": 1.25}
    original.errors = [{"kind": "timeout", "device": "d1"}]
    original.deadline_ms = 2**40
    await journal.insert(original)
    assert await journal.get("t1") == original
    assert await journal.list_tasks("queued", 5) == [original]
    assert await journal.counts() == {"queued": 1}
