"""The agent's membership of the cluster: one link at a time, dialled again with capped,
jittered backoff when it breaks; on each link, registration, heartbeats, the master's messages,
results delivered or kept, drain and goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import grpc

from edgesched import masters
from edgesched.agent.heartbeat import Heartbeats
from edgesched.agent.identity import Identity
from edgesched.agent.link import (
    Refused,
    SendQueue,
    gateways,
    link_stub,
    link_target,
    open_channel,
    outgoing,
    short,
)
from edgesched.agent.outbox import Outbox
from edgesched.agent.pacing import Pacer
from edgesched.agent.receiver import Receiver
from edgesched.agent.runner import Runner
from edgesched.config import AgentSettings
from edgesched.errors import TransportError
from edgesched.wire import link as wire

log = logging.getLogger("edgesched.agent")

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0

#: builds the Register message for this identity and link number
RegisterFn = Callable[[Identity, int], wire.AgentMessage]


class Session:
    """Keeps the agent linked to the master and carries its messages both ways.

    Owns the link (dialling, its send queue, the stream), the agent's identity (saved when the
    master assigns a new one), the link count, the drain and leave state, and delivery: results
    sent but not yet covered by an acknowledged heartbeat, and outbox files resent on a new link.
    It may not run tasks or decide their outcome (the runner does), nor reassemble payloads (the
    receiver does): it hands them the master's messages and sends what they give back."""

    def __init__(
        self,
        a: AgentSettings,
        identity: Identity,
        register: RegisterFn,
        runner: Runner,
        receiver: Receiver,
        heartbeats: Heartbeats,
        outbox: Outbox,
        pacer: Pacer,
        rng: random.Random,
    ) -> None:
        self.a = a
        self.identity = identity
        self._register = register
        self.runner = runner
        self.receiver = receiver
        self.heartbeats = heartbeats
        self.outbox = outbox
        self.pacer = pacer
        self.rng = rng
        #: the masters ``master_ip`` lists, and which to try next (the leader when hinted)
        self.masters = gateways(a)
        self.linked_to = ""  #: the link's master (host:port), for the log
        #: outbox files sent on this link, removed once a later heartbeat is acknowledged
        self._unconfirmed: list[tuple[int, list[Path]]] = []
        #: results sent on this link and not yet covered by an acknowledged heartbeat: if the
        #: link turns out to be dead they go to the outbox instead of being lost
        self._unacked: list[tuple[int, wire.AgentMessage]] = []
        self.draining = False
        #: draining to leave (SIGTERM): kept on a new link; an operator's drain is not (the
        #: master tells a rejoining agent again when an operator drained it)
        self._stopping = False
        self._leave = asyncio.Event()
        self._send_q: Optional[SendQueue] = None  # noqa: UP045 - runs on Python 3.9
        self.session_no = 0
        self._started = time.monotonic()
        self.connected = asyncio.Event()
        #: the master of this link speaks ≥ 1.2: reports go up in batches
        self.master_batches = False

    def rejoin(self) -> None:
        """After a simulated disconnect: the next link is a fresh membership, not draining
        (the leave's own drain ended with it)."""
        self._leave.clear()
        self._stopping = False
        self.draining = False

    async def keep_linked(self, stop: asyncio.Event) -> None:
        """Links again and again (backoff between) until the agent leaves, or ``stop`` is set
        with nothing to hand over."""
        delay = BACKOFF_MIN_S
        while not self._leave.is_set():
            if stop.is_set() and not self.connected.is_set() and not self.runner.running:
                break  # stopping with nothing to hand over: results are in the outbox
            started = time.monotonic()
            answer = masters.NO_ANSWER
            try:
                await self.link(stop)
            except Refused:
                raise
            except (TransportError, grpc.aio.AioRpcError, OSError) as exc:
                answer = masters.from_rpc_error(exc)
                log.warning("link to master failed: %s", short(exc))
            self.connected.clear()
            if self._leave.is_set():
                break
            if time.monotonic() - started > 10:
                delay = BACKOFF_MIN_S  # the link had been up: start the backoff again
            if answer.leader is not None and self.masters.follow(answer.leader):
                # a standby named the leader: dial it now, the long backoff is for failures
                log.info("a standby master says the leader is %s", answer.leader.host)
                wait = masters.HINT_PAUSE_S
            else:
                self.masters.next()  # down, or a standby without a hint: the list's next
                wait = self.rng.uniform(delay / 2, delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._leave.wait(), wait)

    async def link(self, stop: asyncio.Event) -> None:
        """One link, from dialling to its end (an error, the master closing it, or leaving)."""
        target = await link_target(self.a, self.masters)
        self.linked_to = target
        self.session_no += 1
        async with open_channel(self.a, target) as channel:
            stub = link_stub(channel)
            send_q: SendQueue = asyncio.Queue()
            self._send_q = send_q
            self.master_batches = False  # until this link's master says it speaks 1.2
            send_q.put_nowait(self._register(self.identity, self.session_no))
            call = stub.Connect(outgoing(send_q, lambda: self.master_batches))
            heartbeats: asyncio.Task[None] | None = None
            drainer: asyncio.Task[None] | None = None
            leave = asyncio.create_task(self._leave.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                reader = call.__aiter__()  # not aiter(): agents run on Python 3.9
                next_msg: asyncio.Future[wire.MasterMessage] | None = None
                while True:
                    if stop.is_set() and drainer is None:
                        drainer = asyncio.create_task(self._drain(send_q))
                    if next_msg is None:
                        next_msg = asyncio.ensure_future(reader.__anext__())
                    waiting = {next_msg, leave} if stopper.done() else {next_msg, leave, stopper}
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if leave in done:
                        await self._say_goodbye(send_q, next_msg)
                        call.cancel()
                        return
                    if next_msg not in done:
                        continue
                    try:
                        message = next_msg.result()
                    except StopAsyncIteration:
                        raise TransportError("the master closed the link") from None
                    finally:
                        next_msg = None
                    kind = wire.kind_of(message)
                    if self.pacer.active and kind in ("chunk", "assignment", "assignments"):
                        # a slow uplink: the payload takes its time, and what follows waits
                        size = (
                            len(message.chunk.data)
                            if kind == "chunk"
                            else sum(len(a.payload) for a in wire.assignments_of(message))
                        )
                        t = time.monotonic() - self._started
                        await asyncio.sleep(self.pacer.delay_s(size, t))
                    if kind == "registered":
                        heartbeats = self._on_registered(message.registered, send_q)
                    elif kind == "refused":
                        if message.refused.code == "limit":  # the master's join limits: for now
                            raise TransportError(f"refused for now: {message.refused.message}")
                        raise Refused(f"{message.refused.code}: {message.refused.message}")
                    else:
                        self._on_message(message)
            finally:
                leave.cancel()
                stopper.cancel()
                for _, unacked in self._unacked:  # sent into a link that died: keep them
                    self.outbox.put(unacked)
                self._unacked.clear()
                self._send_q = None
                for task in (heartbeats, drainer):
                    if task is not None:
                        task.cancel()

    def _on_registered(self, reply: wire.RegisterReply, send_q: SendQueue) -> asyncio.Task[None]:
        if (reply.agent_id, reply.credential) != (self.identity.agent_id, self.identity.credential):
            self.identity = Identity(reply.agent_id, reply.credential)
            self.identity.save(self.a.data_dir)
        self.master_batches = wire.batched(reply.protocol)
        for task_id in reply.drop_task_ids:
            self.runner.cancel(task_id, "the master moved it elsewhere", report=False)
        self.masters.settled()
        log.info(
            "joined the master at %s as %s (%d slots)",
            self.linked_to,
            reply.agent_id,
            self.runner.slots,
        )
        self._unconfirmed.clear()
        items = self.outbox.items()
        for _, message in items:
            send_q.put_nowait(message)
        if items:
            log.info("sending %d results kept while the link was down", len(items))
            # the next heartbeat's ack proves the master has read them
            self._unconfirmed.append((self.heartbeats.seq + 1, [path for path, _ in items]))
        self.draining = self._stopping  # a new link: undrained unless this agent is leaving
        self.connected.set()
        interval = max(0.05, reply.heartbeat_interval_ms / 1000.0)
        return asyncio.create_task(self.heartbeats.loop(interval, send_q, self._heartbeat))

    async def _say_goodbye(
        self,
        send_q: SendQueue,
        pending: asyncio.Future[wire.MasterMessage],
    ) -> None:
        """Goodbye, then half-close, then wait (briefly) for the master to end the stream."""
        send_q.put_nowait(wire.goodbye("stopping"))
        send_q.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pending, 3.0)

    def send(self, message: wire.AgentMessage) -> None:
        """Sends now, or keeps a result on disk for the next link if there is none."""
        keep = message.HasField("result") or message.HasField("failure")
        if self._send_q is not None and self.connected.is_set():
            self._send_q.put_nowait(message)
            if keep:
                self._unacked.append((self.heartbeats.seq + 1, message))
        elif keep:
            self.outbox.put(message)

    async def _drain(self, send_q: SendQueue) -> None:
        """SIGTERM: take nothing new, finish what runs (bounded), then leave."""
        self._stopping = True
        self.draining = True
        send_q.put_nowait(self._heartbeat())  # tells the master at once
        log.info("draining: %d tasks to finish", len(self.runner.running))
        await self.runner.wait_idle(self.a.drain_timeout_s)
        if self.runner.running:
            log.warning("drain timeout: handing %d tasks back", len(self.runner.running))
        await asyncio.sleep(0.05)  # results just queued leave before the goodbye
        self._leave.set()

    def _heartbeat(self) -> wire.AgentMessage:
        return self.heartbeats.message(
            free_slots=self.runner.free_slots,
            running_task_ids=sorted(self.runner.running),
            outbox=len(self.outbox),
            draining=self.draining,
            bandwidth_mbps=self.receiver.bandwidth_mbps,
        )

    def _on_message(self, message: wire.MasterMessage) -> None:
        """The master's other messages: acks, assignments and their chunks, cancels, drains."""
        kind = wire.kind_of(message)
        now = time.monotonic()
        if kind == "heartbeat_ack":
            seq = message.heartbeat_ack.seq
            self.heartbeats.acked(seq, now)
            while self._unconfirmed and self._unconfirmed[0][0] <= seq:
                self.outbox.remove(self._unconfirmed.pop(0)[1])
            while self._unacked and self._unacked[0][0] <= seq:
                self._unacked.pop(0)
        elif kind in ("assignment", "assignments"):  # one, or a 1.2 batch: each as if alone
            for assignment in wire.assignments_of(message):
                received = self.receiver.assignment(assignment, now)
                if received is not None:
                    self.runner.start(received)
        elif kind == "chunk":
            received = self.receiver.chunk(message.chunk, now)
            if received is not None:
                self.runner.start(received)
        elif kind == "cancel":
            self.runner.cancel(message.cancel.task_id, message.cancel.reason)
        elif kind == "drain" and not self._leave.is_set():
            # an operator's drain: keep running what we have, report it in every heartbeat
            self.draining = message.drain.drain or self._stopping  # an undrain cannot stop a leave
            log.info("%s: %s", "draining" if self.draining else "undrained", message.drain.reason)
