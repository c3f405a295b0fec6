"""Pushes seed tasks' label files to ``http://<client-ip>:<result port>/recv_rst``.

As the seed's result sender does, but from the master, journaled and without polling: each
result is posted the moment its task is done, retried with capped jittered backoff until the
receiver answers 200, never holding up other pushes. After ``result_push_ttl_s`` it is marked
``undeliverable`` and stays retrievable through the API. Receivers must be idempotent (the seed's
overwrites by file name): after a master restart a push may be repeated.

Fairness: each destination has at most ``result_push_per_destination`` pushes open at once and
every push has connect and read timeouts, so a receiver that accepts and never answers holds only
its own results back. A push that cannot even be attempted (a client address that is not an IP
literal, left in an older journal) ends ``undeliverable`` with the reason, like any other failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

import httpx

from edgesched import failpoints
from edgesched.errors import BadInputError
from edgesched.filenames import stem
from edgesched.journal.base import TaskRow
from edgesched.kinds import FailureKind
from edgesched.master.compat.intake import canonical_ip
from edgesched.master.master import Master

log = logging.getLogger("edgesched.pusher")

#: pushes open at once over all destinations (each destination has its own, smaller limit)
CONCURRENCY = 64
BACKOFF_S = 0.5
BACKOFF_CAP_S = 30.0


def result_name(row: TaskRow) -> str:
    """``<client-ip>_<n>.txt``: the saved upload's stem, as the seed's detector names it."""
    return stem(row.metadata.get("seed_file") or Path(row.payload_path).name) + ".txt"


def result_fields(row: TaskRow) -> dict[str, str]:
    """The form fields beside the ``file`` part. The later receivers file a result under
    ``<dir>/<service>/rst/`` (the fork's under ``<dir>/<req_id>/``); the first ignore them.
    ``service`` is the task type as the client named it (``YoloV5``), not the one it ran as."""
    fields = {"service": row.metadata.get("service") or row.task_type}
    if row.metadata.get("req_id"):
        fields["req_id"] = row.metadata["req_id"]
    return fields


def receiver_url(host: str, port: int) -> str:
    """The receiver of a client: its IP literal (never a name to resolve) and the result port;
    BadInputError when the stored address is not an IP literal."""
    ip = canonical_ip(host)
    return f"http://[{ip}]:{port}/recv_rst" if ":" in ip else f"http://{ip}:{port}/recv_rst"


class ResultPusher:
    """Pushes each seed task's result to its client's ``/recv_rst`` receiver, retrying until
    it is taken, and records the delivery through ``Master``. Owns the pushes in flight and
    their per-receiver slots; it may not change a task's state."""

    def __init__(self, master: Master, rng: random.Random | None = None) -> None:
        self.master = master
        self.rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        #: per receiver URL: its slots and how many pushes use them (dropped when none does)
        self._per_destination: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._pushing_to: dict[str, str] = {}  #: task id → the receiver URL it holds
        m = master.settings.master
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(m.result_push_timeout_s, connect=m.result_push_connect_timeout_s),
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=16),
            trust_env=False,  # no proxy from the environment: the push goes to the client itself
        )
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
            task = asyncio.create_task(self._deliver_marked(row))
            self._tasks[row.id] = task
            task.add_done_callback(lambda _: self._tasks.pop(row.id, None))

    async def _deliver_marked(self, row: TaskRow) -> None:
        """Every push ends marked: an error nobody expected is an undeliverable result with its
        reason, never a task that dies unseen and leaves the delivery pending forever."""
        finished_ms = row.finished_ms or self.master.clock.wall_ms()
        try:
            await self._deliver(row, finished_ms)
        except asyncio.CancelledError:
            raise  # the master is stopping: the push resumes at the next start
        except Exception as exc:
            log.exception("result of task %s cannot be pushed", row.id)
            try:
                self._mark(row, "undeliverable", finished_ms, f"{type(exc).__name__}: {exc}")
            except Exception:  # the journal itself failed: the push resumes at the next start
                log.exception("result of task %s: its outcome cannot be journaled", row.id)
        finally:
            self._done_with_destination(row)

    def _destination(self, row: TaskRow, url: str) -> asyncio.Semaphore:
        """The receiver's own slots, shared by every push to it while any is under way."""
        limit = self.master.settings.master.result_push_per_destination
        slots, users = self._per_destination.get(url) or (asyncio.Semaphore(limit), 0)
        self._per_destination[url] = (slots, users + 1)
        self._pushing_to[row.id] = url
        return slots

    def _done_with_destination(self, row: TaskRow) -> None:
        url = self._pushing_to.pop(row.id, None)
        if url is None:
            return
        slots, users = self._per_destination[url]
        if users <= 1:
            del self._per_destination[url]  # nothing kept for receivers nobody pushes to
        else:
            self._per_destination[url] = (slots, users - 1)

    async def _deliver(self, row: TaskRow, finished_ms: int) -> None:
        m = self.master.settings.master
        try:
            url = receiver_url(row.client_addr, m.result_port)
        except BadInputError as exc:
            log.warning("result of task %s undeliverable: %s", row.id, exc)
            self._mark(row, "undeliverable", finished_ms, str(exc))
            return
        name = result_name(row)
        give_up_ms = finished_ms + int(m.result_push_ttl_s * 1000)
        delay = BACKOFF_S
        await self.master.journal.flush()  # the done row is durable before its result leaves
        destination = self._destination(row, url)
        while True:
            failpoints.hit("before_result_push")
            try:
                # the destination's own limit first: waiting for it holds no shared slot
                async with destination, self._slots:
                    response = await self._client.post(
                        url,
                        data=result_fields(row),
                        files={"file": (name, row.label.encode(), "application/octet-stream")},
                    )
                if response.status_code == 200:
                    self._mark(row, "delivered", finished_ms)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self.master.clock.wall_ms() + delay * 1000 > give_up_ms:
                log.warning("result of task %s undeliverable to %s: %s", row.id, url, reason)
                self._mark(row, "undeliverable", finished_ms, reason)
                return
            log.info("push of task %s to %s failed (%s); retrying", row.id, url, reason)
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(BACKOFF_CAP_S, delay * 2)

    def _mark(self, row: TaskRow, delivery: str, finished_ms: int, reason: str = "") -> None:
        row.delivery = delivery
        now_ms = self.master.clock.wall_ms()
        row.timings["delivery_ms"] = float(max(0, now_ms - finished_ms))
        values: dict[str, object] = {"delivery": delivery, "timings": row.timings}
        if reason:  # why, in the task's history (not counted as a failure of the task)
            row.errors = [
                *row.errors,
                {
                    "attempt": row.attempt,
                    "device_id": "",
                    "kind": FailureKind.UNDELIVERABLE,
                    "message": reason[:500],
                    "at_unix_ms": now_ms,
                    "counted": False,
                },
            ]
            values["errors"] = row.errors
        self.master.record_delivery(row.id, values)
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
