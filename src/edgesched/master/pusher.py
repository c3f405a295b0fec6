"""Pushes seed tasks' label files to ``http://<client-ip>:<result port>/recv_rst``.

As the seed's result sender does, but from the master, journaled and without polling: each
result is posted the moment its task is done, retried with capped jittered backoff until the
receiver answers 200, never holding up other pushes. After ``result_push_ttl_s`` it is marked
``undeliverable`` and stays retrievable through the API. Receivers must be idempotent (the seed's
overwrites by file name): after a master restart a push may be repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

import httpx

from edgesched import failpoints
from edgesched.journal.base import TaskRow
from edgesched.master.master import Master
from edgesched.names import stem

log = logging.getLogger("edgesched.pusher")

CONCURRENCY = 16
BACKOFF_S = 0.5
BACKOFF_CAP_S = 30.0


def result_name(row: TaskRow) -> str:
    """``<client-ip>_<n>.txt``: the saved upload's stem, as the seed's detector names it."""
    return stem(row.metadata.get("seed_file") or Path(row.payload_path).name) + ".txt"


def receiver_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/recv_rst" if ":" in host else f"http://{host}:{port}/recv_rst"


class ResultPusher:
    def __init__(self, master: Master, rng: random.Random | None = None) -> None:
        self.master = master
        self.rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._client = httpx.AsyncClient(timeout=10.0)
        self.delivered = 0
        self.undeliverable = 0

    async def resume(self) -> int:
        """Starts pushing every result still pending in the journal (after a restart)."""
        rows = await self.master.journal.pending_deliveries()
        for row in rows:
            self.push(row)
        return len(rows)

    def push(self, row: TaskRow) -> None:
        if row.id not in self._tasks:
            task = asyncio.create_task(self._deliver(row))
            self._tasks[row.id] = task
            task.add_done_callback(lambda _: self._tasks.pop(row.id, None))

    async def _deliver(self, row: TaskRow) -> None:
        m = self.master.settings.master
        url = receiver_url(row.client_addr, m.result_port)
        name = result_name(row)
        finished_ms = row.finished_ms or self.master.clock.wall_ms()
        give_up_ms = finished_ms + int(m.result_push_ttl_s * 1000)
        delay = BACKOFF_S
        await self.master.journal.flush()  # the done row is durable before its result leaves
        while True:
            failpoints.hit("before_result_push")
            try:
                async with self._slots:
                    response = await self._client.post(
                        url, files={"file": (name, row.label.encode(), "application/octet-stream")}
                    )
                if response.status_code == 200:
                    self._mark(row, "delivered", finished_ms)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self.master.clock.wall_ms() + delay * 1000 > give_up_ms:
                log.warning("result of task %s undeliverable to %s: %s", row.id, url, reason)
                self._mark(row, "undeliverable", finished_ms)
                return
            log.info("push of task %s to %s failed (%s); retrying", row.id, url, reason)
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(BACKOFF_CAP_S, delay * 2)

    def _mark(self, row: TaskRow, delivery: str, finished_ms: int) -> None:
        row.delivery = delivery
        row.timings["delivery_ms"] = float(max(0, self.master.clock.wall_ms() - finished_ms))
        self.master.journal.update(row.id, {"delivery": delivery, "timings": row.timings})
        if delivery == "delivered":
            self.delivered += 1
            self.master.metrics.observe_delivery(row.timings["delivery_ms"])
            log.info("result of task %s delivered as %s", row.id, result_name(row))
            self.master.remove_payload_after_commit(row)
        else:
            self.undeliverable += 1

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()
