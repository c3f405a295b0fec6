"""Running tasks: the slot gate, the backend on a worker thread (an instant one in the event
loop), emulated service time, and the message each outcome becomes (started, result, failure)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from edgesched.agent.backends import Backend, BackendResult
from edgesched.agent.emulation import Profile, SlotMeter, SlowWindow
from edgesched.agent.receiver import Received
from edgesched.errors import BadInputError
from edgesched.kinds import FailureKind
from edgesched.wire import link

log = logging.getLogger("edgesched.agent")


class Runner:
    """Runs what the master gave, at most ``slots`` at once, and says how each went.

    Owns the tasks on this board (running, or waiting for a slot with their payload), the slot
    gate, the worker threads and the slot meter. It may not touch the link, the outbox or the
    heartbeats: every message goes out through ``send``, which decides where it goes."""

    def __init__(
        self,
        backend: Backend,
        slots: int,
        send: Callable[[link.AgentMessage], None],
        profile: Optional[Profile],  # noqa: UP045 - runs on Python 3.9
        rng: random.Random,
        time_scale: float,
        slow: Optional[SlowWindow] = None,  # noqa: UP045 - runs on Python 3.9
    ) -> None:
        self.backend = backend
        self.slots = slots
        self._send = send
        self.profile = profile
        self.rng = rng
        self.time_scale = time_scale
        self.slow = slow  #: an emulated straggler's window (benchmarks), or None
        self.meter = SlotMeter(slots, time.monotonic())
        #: a backend that declares itself instant (``inline = True``: it returns at once and
        #: never blocks) runs in the event loop: a hop to a worker thread and back would cost
        #: more than the task; every other backend runs on a worker thread
        self.inline: bool = getattr(backend, "inline", False) is True
        self.pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="infer")
        #: every task the master gave and whose payload is here: running, or waiting for a slot
        #: (the master sends up to slots + scheduling.prefetch, so the next payload travels
        #: while the current task runs)
        self.running: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._slot_gate: Optional[asyncio.Semaphore] = None  # noqa: UP045 - made in the loop
        self._idle = asyncio.Event()  #: set whenever the last running task ends

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - len(self.running))

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def wait_idle(self, timeout_s: float) -> None:
        """Until nothing runs, or ``timeout_s``."""
        if self.running:
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)

    def start(self, received: Received) -> None:
        """The whole payload is here: check it, then run the task (or queue it for a slot)."""
        a, payload = received.assignment, received.payload
        if a.payload_sha256 and hashlib.sha256(payload).hexdigest() != a.payload_sha256:
            self._fail(a, FailureKind.TRANSFER, "payload checksum mismatch", retryable=True)
            return
        old = self.running.pop(a.task_id, None)
        if old is not None:
            old[1].cancel()
        task = asyncio.create_task(
            self._execute(a, payload, received.receive_ms, received.complete_at)
        )
        self.running[a.task_id] = (a.attempt, task)
        self._send(link.task_started(a.task_id, a.attempt, received.receive_ms))

    def cancel(self, task_id: str, reason: str, report: bool = True) -> None:
        entry = self.running.pop(task_id, None)
        if not self.running:
            self._idle.set()
        if entry is None:
            return
        attempt, task = entry
        task.cancel()
        log.info("task %s attempt %d cancelled: %s", task_id, attempt, reason)
        if report:
            self._send(link.task_failed(task_id, attempt, FailureKind.CANCELLED, reason))

    def _fail(
        self, a: link.Assignment, kind: FailureKind, message: str, retryable: bool = False
    ) -> None:
        self._send(link.task_failed(a.task_id, a.attempt, kind, message, retryable))

    async def _execute(
        self, a: link.Assignment, payload: bytes, receive_ms: float, arrived: float
    ) -> None:
        if self._slot_gate is None:
            self._slot_gate = asyncio.Semaphore(self.slots)
        async with self._slot_gate:  # a prefetched task waits here for a slot, payload in hand
            await self._run_in_slot(a, payload, receive_ms, arrived)

    async def _run_in_slot(
        self, a: link.Assignment, payload: bytes, receive_ms: float, arrived: float
    ) -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        self.meter.start(start)
        try:
            result: BackendResult
            if self.inline:
                result = self.backend.run(a.task_type, payload, a.task_id)
            else:
                result = await loop.run_in_executor(
                    self.pool, self.backend.run, a.task_type, payload, a.task_id
                )
            paced_ms = 0.0
            if self.profile is not None:
                target = self.profile.sample_ms(self.rng) * self.time_scale / 1000
                if self.slow is not None:
                    target *= self.slow.factor_at(start)
                remaining = target - (time.monotonic() - start)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    paced_ms = remaining * 1000
        except asyncio.CancelledError:
            raise
        except BadInputError as exc:
            self._fail(a, FailureKind.BAD_INPUT, str(exc))
            return
        except Exception as exc:
            log.exception("task %s failed in the backend", a.task_id)
            self._fail(a, FailureKind.BACKEND, f"{type(exc).__name__}: {exc}", retryable=True)
            return
        finally:
            self.meter.stop(time.monotonic())
            if self.running.get(a.task_id, (None,))[0] == a.attempt:
                del self.running[a.task_id]
            if not self.running:
                self._idle.set()
        end = time.monotonic()
        timings = dict(
            receive_ms=receive_ms,
            queue_ms=max(0.0, (start - arrived) * 1000),
            decode_ms=result.timings.get("decode_ms", 0.0),
            inference_ms=result.timings.get("inference_ms", 0.0),
            postprocess_ms=result.timings.get("postprocess_ms", 0.0),
            paced_ms=paced_ms,
            total_ms=(end - arrived) * 1000 + receive_ms,
        )
        self._send(self._done(a, result, timings, len(payload)))

    def _done(
        self,
        a: link.Assignment,
        result: BackendResult,
        timings: dict[str, float],
        payload_bytes: int,
    ) -> link.AgentMessage:
        """The result message: the backend's label and detections, the board's timings."""
        return link.task_done(
            task_id=a.task_id,
            attempt=a.attempt,
            label=result.label,
            detections=result.detections,
            timings=timings,
            backend=self.backend.name,
            payload_bytes=payload_bytes,
        )
