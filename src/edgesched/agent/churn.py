"""The seed's simulated churn (``--disconnect S --reconnect R``): every S seconds of membership
the agent leaves as on SIGTERM (drains, hands back what it cannot finish, says goodbye), stays
away R seconds, then joins again with the same id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("edgesched.agent")


async def run_with_churn(
    member: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    disconnect_s: float,
    reconnect_s: float,
    connected: asyncio.Event,
    rejoin: Callable[[], None],
) -> None:
    """Runs ``member(leave)`` until ``stop``; with churn, sets its ``leave`` ``disconnect_s``
    after each join and calls it again (after ``rejoin()``) ``reconnect_s`` later. Either ≤ 0:
    no churn, ``member(stop)`` runs once."""
    if disconnect_s <= 0 or reconnect_s <= 0:
        await member(stop)
        return
    while not stop.is_set():
        leave = asyncio.Event()
        timer = asyncio.ensure_future(_leave_after(disconnect_s, stop, leave, connected))
        try:
            await member(leave)
        finally:
            timer.cancel()
        if stop.is_set():
            return
        log.info("simulated disconnect: rejoining in %.1f s", reconnect_s)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), reconnect_s)
        rejoin()


async def _leave_after(
    seconds: float, stop: asyncio.Event, leave: asyncio.Event, connected: asyncio.Event
) -> None:
    """Sets ``leave`` after ``seconds`` of membership, or at once when ``stop`` is set."""
    joined = asyncio.ensure_future(connected.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({joined, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        joined.cancel()
        stopped.cancel()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    leave.set()
