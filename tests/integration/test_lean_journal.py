"""The lean journal path (issue 16, item 2): an attempt's start is not journaled, yet the API
shows tasks as they are, and the journal holds each task's end."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import common_pb2


async def test_running_tasks_are_shown_running_while_the_journal_waits_for_their_end(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    await cluster.add_agent("a1", emulate="rk3588", time_scale=20.0)  # slowed: tasks run a while
    ids = [(await cluster.submit(f"k{i}", png_bytes())).task_id for i in range(6)]
    db = Path(cluster.master.settings.master.data_dir) / "edgesched.db"
    listed: list[str] = []
    for _ in range(200):
        listed = [
            t["id"] for t in (await cluster.get("/api/v1/tasks?state=running")).json()["tasks"]
        ]
        if listed:
            break
        await asyncio.sleep(0.02)
    assert listed and set(listed) <= set(ids)
    summary = (await cluster.get("/api/v1/summary")).json()
    assert summary["tasks"].get("running", 0) + summary["tasks"].get("assigned", 0) >= 1
    await cluster.master.journal.flush()
    with sqlite3.connect(db) as conn:
        journaled = dict(
            conn.execute(f"SELECT id, state FROM tasks WHERE id = '{listed[0]}'").fetchall()
        )
    assert journaled[listed[0]] == "queued"  # its start was never written
    results = await cluster.wait(ids, 60)
    assert {r.state for r in results.values()} == {common_pb2.TASK_STATE_DONE}
    assert {r.attempts for r in results.values()} == {1}
    await cluster.master.journal.flush()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT state, attempt FROM tasks").fetchall()
    assert sorted(set(rows)) == [("done", 1)]
    summary = (await cluster.get("/api/v1/summary")).json()
    assert summary["tasks"] == {"done": 6}
