"""Bandwidth measured from real transfers: a throttled agent gets little work under `load`, and
a fluctuating link shows in what the master reports."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter

from PIL import Image

from edgesched.agent.pacing import BandwidthTrace, Pacer
from edgesched.tools.testing.inprocess_cluster import InProcessCluster


def noisy_png(seed: int, size: int = 180) -> bytes:
    """About 100 KB: noise does not compress."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_trace_is_repeatable_and_stays_in_the_seeds_range() -> None:
    a, b = BandwidthTrace(7, 1.0), BandwidthTrace(7, 1.0)
    assert [a.rate_mbps(t) for t in range(10)] == [b.rate_mbps(t) for t in range(10)]
    assert all(50 <= a.rate_mbps(t) <= 500 for t in range(100))
    assert len({a.rate_mbps(t) for t in range(10)}) > 5


def test_a_limit_and_a_trace_pace_by_the_slower() -> None:
    pacer = Pacer(limit_mbps=2.0, trace=BandwidthTrace(1, 1.0))
    assert pacer.delay_s(250_000, 0.0) == 1.0  # 2 Mbit at 2 Mbit/s
    assert Pacer().delay_s(10**9, 0.0) == 0.0


async def test_an_agent_limited_to_2_mbit_gets_under_30_percent_of_100_kb_tasks(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster(strategy="load", heartbeat_interval_s=0.2)
    slow = await cluster.add_agent("slow", slots=2, bandwidth_limit_mbps=2.0)
    fast = await cluster.add_agent("fast", slots=2)
    payloads = [noisy_png(i) for i in range(40)]
    assert all(90_000 < len(p) < 110_000 for p in payloads)
    # one burst, as cameras send: submitted one by one on a loaded machine, every task could
    # find the fast board idle, and the slow one would never see a transfer to measure
    replies = await asyncio.gather(*(cluster.submit(f"k{i}", p) for i, p in enumerate(payloads)))
    results = await cluster.wait([r.task_id for r in replies], limit_s=90)
    per_device = Counter(r.device_id for r in results.values())
    assert sum(per_device.values()) == 40
    assert per_device[slow.identity.agent_id] < 0.3 * 40, per_device
    assert per_device[fast.identity.agent_id] > 0.7 * 40
    device = next(
        d
        for d in (await cluster.get("/api/v1/devices")).json()["devices"]
        if d["id"] == slow.identity.agent_id
    )
    assert 0 < device["bandwidth_mbps"] < 4  # measured from its transfers, near the limit


async def test_a_fluctuating_link_shows_in_the_reported_bandwidth(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster(heartbeat_interval_s=0.1)
    agent = await cluster.add_agent(
        "a", bandwidth_fluctuate=True, bandwidth_step_s=0.3, seed=3, slots=1
    )
    seen: set[float] = set()
    for i in range(30):
        reply = await cluster.submit(f"k{i}", noisy_png(i))
        await cluster.wait([reply.task_id])
        await asyncio.sleep(0.15)  # a heartbeat carries the new figure
        (device,) = (await cluster.get("/api/v1/devices")).json()["devices"]
        seen.add(round(device["bandwidth_mbps"], 1))
        if len(seen) >= 4:
            break
    assert len(seen) >= 4, seen
    assert agent.pacer.trace is not None
