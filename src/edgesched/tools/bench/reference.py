"""The plain gRPC hop that ``bench overhead`` and ``bench payload`` measure beside edgesched, in
the same run (issue 16, item 5): the machine here is shared and noisy, so the gates read ratios.

What is "plain": a grpc.aio client calls a unary method ``/bench.Echo/Call`` on a grpc.aio
server in another process on 127.0.0.1 — one hop, raw bytes (no protobuf message, no journal, no
scheduling, no token check). What it is measured with mirrors the scenario:

* overhead: one server process that echoes the request (the scenario's 1 KB payload) back;
  throughput over ``tasks`` calls with ``WINDOW`` in flight, and sequential round trips.
* payload: two server processes (edgesched runs two agents), each with one slot, each call
  burning the same CPU as the agent's ``busy`` backend (:class:`BusyBackend`, in a worker thread
  as the agent runs it) on the scenario's 100 KB payload and answering a few bytes; the client
  spreads calls over both. Efficiency = calls/s ÷ (2 × 1000 ÷ the server's measured work ms),
  the same formula as edgesched's.

The server is this module run as ``python -m edgesched.tools.bench.reference [--busy-ms MS]``;
it prints its port on its first stdout line and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc

from edgesched.tools.bench.timing import MAX_MESSAGE, summary_ms

METHOD = "/bench.Echo/Call"
WINDOW = 64  #: calls in flight in a bulk run (edgesched's client streams all; 64 saturates one hop)
START_TIMEOUT_S = 20.0
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def _identity(data: bytes) -> bytes:
    return data


# ---- the server (its own process) -----------------------------------------------------------


async def _serve(busy_ms: float) -> None:
    slot = asyncio.Semaphore(1)  # one slot, as each of the payload scenario's agents has
    busy = None
    if busy_ms > 0:
        from edgesched.agent.backends.raw import BusyBackend
        from edgesched.config import Settings

        busy = BusyBackend(Settings().tasktypes, busy_ms)

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if busy is None:
            return request
        async with slot:
            result = await asyncio.to_thread(busy.run, "echo", request)
        # the work's milliseconds, as the agent reports them in its result
        return struct.pack("!d", float(result.timings.get("inference_ms", 0.0)))

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Call": grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    # serve until the bench closes our stdin (or goes away)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(grace=None)


@contextmanager
def reference_servers(count: int, busy_ms: float = 0.0) -> Iterator[list[str]]:
    """``count`` server processes; yields their targets and stops them all on the way out."""
    with ExitStack() as stack:
        targets = []
        for _ in range(count):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgesched.tools.bench.reference",
                    "--busy-ms",
                    f"{busy_ms}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(_stop, process)
            line = _first_line(process)
            targets.append(f"127.0.0.1:{int(line)}")
        yield targets


def _first_line(process: subprocess.Popen[str]) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(START_TIMEOUT_S):
            raise RuntimeError(f"the reference server gave no port in {START_TIMEOUT_S} s")
    line = process.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError(f"the reference server did not start: {line!r}")
    return line


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# ---- the client (the bench's event loop) ----------------------------------------------------


class ReferenceClient:
    """Calls the servers round-robin; one channel per server."""

    def __init__(self, targets: list[str], busy: bool = False) -> None:
        self.targets = targets
        self.busy = busy  #: the servers answer their work's milliseconds, not an echo
        self._channels: list[grpc.aio.Channel] = []
        self._calls: list[Any] = []
        self._next = 0

    async def __aenter__(self) -> ReferenceClient:
        for target in self.targets:
            channel = grpc.aio.insecure_channel(target, options=_OPTIONS)
            self._channels.append(channel)
            self._calls.append(
                channel.unary_unary(
                    METHOD, request_serializer=_identity, response_deserializer=_identity
                )
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.close() for c in self._channels), return_exceptions=True)

    async def call(self, payload: bytes, timeout_s: float) -> bytes:
        method = self._calls[self._next % len(self._calls)]
        self._next += 1
        reply: bytes = await method(payload, timeout=timeout_s)
        return reply

    async def bulk(self, payloads: list[bytes], timeout_s: float) -> dict[str, Any]:
        """Every payload, ``WINDOW`` calls in flight (per server): calls/s from the first call
        to the last reply; for busy servers the median work ms the servers measured."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(WINDOW * len(self.targets))
        replies: list[bytes] = []

        async def one(payload: bytes) -> None:
            async with gate:
                replies.append(await self.call(payload, timeout_s))

        await asyncio.wait_for(asyncio.gather(*(one(p) for p in payloads)), timeout_s)
        seconds = time.perf_counter() - started
        work = [struct.unpack("!d", r)[0] for r in replies if len(r) == 8] if self.busy else []
        return {
            "calls": len(replies),
            "seconds": round(seconds, 4),
            "calls_per_s": round(len(replies) / seconds, 1),
            "work_ms_median": round(statistics.median(work), 3) if work else None,
        }

    async def round_trips(self, payload: bytes, count: int, timeout_s: float) -> dict[str, Any]:
        """``count`` calls one after another; milliseconds."""
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            await self.call(payload, timeout_s)
            times.append((time.perf_counter() - t0) * 1000)
        return summary_ms(times)


def median_of(rounds: list[dict[str, Any]], *path: str) -> float:
    """The median over rounds of a nested figure, e.g. ``median_of(rs, "bulk", "tasks_per_s")``."""
    values = []
    for r in rounds:
        value: Any = r
        for key in path:
            value = value[key]
        values.append(float(value))
    return round(statistics.median(values), 3)


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def main(argv: list[str]) -> None:
    busy_ms = 0.0
    if len(argv) == 2 and argv[0] == "--busy-ms":
        busy_ms = float(argv[1])
    elif argv:
        raise SystemExit("usage: python -m edgesched.tools.bench.reference [--busy-ms MS]")
    asyncio.run(_serve(busy_ms))


if __name__ == "__main__":
    main(sys.argv[1:])
