"""Where finished tasks are announced to whoever watches them (client result streams)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from edgesched.journal.base import TaskRow


class ResultHub:
    def __init__(self) -> None:
        self._by_task: dict[str, set[asyncio.Queue[TaskRow]]] = defaultdict(set)
        self._by_client: dict[str, set[asyncio.Queue[TaskRow]]] = defaultdict(set)
        self._listeners: list[Callable[[TaskRow], None]] = []  #: every finished task

    def listen(self, listener: Callable[[TaskRow], None]) -> None:
        """Calls ``listener`` with every task announced (the dashboard's window of them)."""
        self._listeners.append(listener)

    def watch_tasks(self, task_ids: list[str], queue: asyncio.Queue[TaskRow]) -> None:
        for task_id in task_ids:
            self._by_task[task_id].add(queue)

    def watch_client(self, client_id: str, queue: asyncio.Queue[TaskRow]) -> None:
        self._by_client[client_id].add(queue)

    def unwatch(self, queue: asyncio.Queue[TaskRow]) -> None:
        for table in (self._by_task, self._by_client):
            for key in [k for k, queues in table.items() if queue in queues]:
                table[key].discard(queue)
                if not table[key]:
                    del table[key]

    def publish(self, row: TaskRow) -> None:
        for queue in self._by_task.pop(row.id, set()) | self._by_client.get(row.client_id, set()):
            queue.put_nowait(row)
        for listener in self._listeners:
            listener(row)
