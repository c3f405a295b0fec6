"""An in-memory journal for tests and throwaway runs. Same behaviour, nothing on disk."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from edgesched.journal.base import Before, CommitHook, TaskRow
from edgesched.kinds import TaskState

FINAL = (TaskState.DONE.value, TaskState.DEAD.value, TaskState.CANCELLED.value)


class MemoryJournal:
    """The ``Journal``'s test double: the same behaviour in dicts, nothing on disk, every
    write committed at once. Owns copies of the rows (a caller's row is never aliased). It may
    not be used where a task must survive the process."""

    def __init__(self) -> None:
        self.fault = ""  #: never set: memory does not fill up the way a disk does
        self.sequence = 0  #: no transactions to count
        self.rows: dict[str, TaskRow] = {}
        self.keys: dict[tuple[str, str], str] = {}
        self.counters: dict[str, int] = {}
        self.agent_rows: dict[str, str] = {}
        self.hooks: list[CommitHook] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def insert(self, row: TaskRow, before: Before | None = None) -> tuple[TaskRow, bool]:
        undo = before() if before is not None else None
        existing = self.keys.get((row.client_id, row.idem_key))
        if existing is not None and undo is not None:
            undo()  # a repeated key: nothing is written for a task not journaled
        try:  # every insert is its own transaction here
            for hook in self.hooks:
                hook.before_commit()
        except BaseException:
            for hook in self.hooks:
                hook.discard()
            raise
        for hook in self.hooks:
            hook.committed()
        if existing is not None:
            return copy.deepcopy(self.rows[existing]), True
        self.rows[row.id] = copy.deepcopy(row)
        self.keys[(row.client_id, row.idem_key)] = row.id
        return copy.deepcopy(row), False

    async def insert_many(
        self, items: list[tuple[TaskRow, Before | None]]
    ) -> list[tuple[TaskRow, bool] | Exception]:
        out: list[tuple[TaskRow, bool] | Exception] = []
        for row, before in items:
            try:
                out.append(await self.insert(row, before))
            except Exception as exc:  # as the SQLite journal: one item's failure is its own
                out.append(exc)
        return out

    def update(self, task_id: str, values: dict[str, Any]) -> None:
        row = self.rows.get(task_id)
        if row is not None:
            for key, value in values.items():
                setattr(row, key, copy.deepcopy(value))

    def add_hook(self, hook: CommitHook) -> None:
        self.hooks.append(hook)

    def after_commit(self, action: Callable[[], None]) -> None:
        action()

    async def flush(self) -> None:
        return None

    async def task_ids(self) -> set[str]:
        return set(self.rows)

    async def get(self, task_id: str) -> TaskRow | None:
        row = self.rows.get(task_id)
        return copy.deepcopy(row) if row else None

    async def find_key(self, client_id: str, idem_key: str) -> TaskRow | None:
        task_id = self.keys.get((client_id, idem_key))
        return await self.get(task_id) if task_id else None

    async def list_tasks(self, state: str | None, limit: int, offset: int = 0) -> list[TaskRow]:
        rows = [r for r in self.rows.values() if state is None or r.state == state]
        rows.sort(key=lambda r: (r.submitted_ms, r.id), reverse=True)
        return [copy.deepcopy(r) for r in rows[offset : offset + limit]]

    async def unfinished(self) -> list[TaskRow]:
        rows = [copy.deepcopy(r) for r in self.rows.values() if r.state not in FINAL]
        return sorted(rows, key=lambda r: (r.submitted_ms, r.id))

    async def prune(
        self,
        before_ms: int,
        keep_rows: int,
        forget: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> list[tuple[str, str]]:
        finished = sorted(
            (r for r in self.rows.values() if r.state in FINAL and r.delivery != "pending"),
            key=lambda r: (r.finished_ms, r.id),
            reverse=True,
        )
        gone = [r for i, r in enumerate(finished) if i >= keep_rows or r.finished_ms < before_ms]
        if forget is not None and gone:
            forget([(r.id, r.payload_path) for r in gone])
        for row in gone:
            del self.rows[row.id]
            self.keys.pop((row.client_id, row.idem_key), None)
        return [(r.id, r.payload_path) for r in gone]

    async def agents(self) -> dict[str, str]:
        return dict(self.agent_rows)

    async def add_agent(self, agent_id: str, credential_sha256: str, device_type: str) -> None:
        self.agent_rows[agent_id] = credential_sha256

    async def remove_agents(self, agent_ids: list[str]) -> None:
        for agent_id in agent_ids:
            self.agent_rows.pop(agent_id, None)

    async def pending_deliveries(self) -> list[TaskRow]:
        rows = [
            copy.deepcopy(r)
            for r in self.rows.values()
            if r.state == TaskState.DONE and r.delivery == "pending"
        ]
        return sorted(rows, key=lambda r: (r.finished_ms, r.id))

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            out[row.state] = out.get(row.state, 0) + 1
        return out

    async def next_counter(self, name: str, floor: int = 0) -> int:
        value = max(self.counters.get(name, 0), floor) + 1
        self.counters[name] = value
        return value
