"""Does the simulator tell the truth? The makespan cluster for real, then in the simulator.

A master and four emulated agents (1 atlas310, 2 rk3588, 1 orin, ``--backend sleep``: no model,
service times paced from the profiles at ``--time-scale``) on loopback run a burst of small
pictures under each strategy. The simulator then replays the same cluster with the arrival
times the client saw, on loopback-fast links; the two makespans should agree within 10 %.
Service times are random draws on both sides (different streams), so a run of a few hundred
tasks is needed for the sums to settle.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

from edgesched.agent.emulation import PROFILES
from edgesched.boards import ATLAS310, ORIN, RK3588
from edgesched.config import SchedulingSettings
from edgesched.tools.bench.timing import Client
from edgesched.tools.sim.model import Link, Scenario, SimDevice, SimTask
from edgesched.tools.sim.simulator import SimResult, simulate
from edgesched.tools.testing.lifecycle import running_cluster
from edgesched.tools.testing.process_cluster import LocalCluster

AGREEMENT_TARGET = 0.10  #: |real - simulated| ÷ real
BOARDS = (ATLAS310, ORIN, RK3588, RK3588)
LOOPBACK = Link(10_000.0, 10_000.0, rtt_ms=0.2)


def picture() -> bytes:
    """A small real PNG: the sleep backend decodes it, as a board would."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_agreement(
    tasks: int = 300, time_scale: float = 20.0, strategies: tuple[str, ...] = ("load", "ect")
) -> dict[str, Any]:
    payload = picture()
    out: dict[str, Any] = {}

    async def measure(c: LocalCluster) -> tuple[dict[str, Any], list[float]]:
        async with Client(c, task_type="layout").session() as client:
            bulk = await client.bulk([payload] * tasks, timeout_s=600)
        results = bulk.pop("results")
        # arrivals as the master stamped them, relative to the first submission
        first = min(r.submitted_unix_ms for r in results)
        arrivals = [(r.submitted_unix_ms - first) / 1000 for r in results]
        bulk["makespan_s"] = (max(r.finished_unix_ms for r in results) - first) / 1000
        bulk["tasks_per_board_type"] = _per_type(Counter(r.device_id for r in results))
        return bulk, arrivals

    async def main() -> None:  # one event loop for every run: gRPC's poller stays with it
        for strategy in strategies:
            agents = [
                ["--emulate", board, "--time-scale", f"{time_scale:g}", "--backend", "sleep"]
                for board in BOARDS
            ]
            with running_cluster(agents, strategy=strategy) as c:
                real, arrivals = await measure(c)
            out[strategy] = _compare(real, _simulate(strategy, arrivals, len(payload), time_scale))

    asyncio.run(main())
    return {
        "tasks": tasks,
        "time_scale": time_scale,
        "boards": list(BOARDS),
        "backend": "sleep (service times paced from the emulation profiles)",
        "strategies": out,
        "agree": all(s["agree_within_10_percent"] for s in out.values()),
    }


def _simulate(strategy: str, arrivals: list[float], size: int, time_scale: float) -> SimResult:
    return simulate(
        Scenario(
            tuple(SimDevice(f"{b}-{i}", PROFILES[b], LOOPBACK) for i, b in enumerate(BOARDS)),
            tuple(SimTask(f"t{i:05d}", size, at=at) for i, at in enumerate(arrivals)),
            master_mbps=10_000.0,
            seed=1,
            settings=SchedulingSettings(strategy=strategy),
            time_scale=time_scale,
        ),
        strategy,
    )


def _per_type(per_device: Mapping[str, int]) -> dict[str, int]:
    """Device ids are ``<type>-<suffix>``: tasks per board type."""
    out: Counter[str] = Counter()
    for device_id, count in per_device.items():
        out[device_id.split("-")[0]] += count
    return dict(sorted(out.items()))


def _compare(real: dict[str, Any], simulated: SimResult) -> dict[str, Any]:
    difference = abs(simulated.makespan_s - real["makespan_s"]) / real["makespan_s"]
    return {
        "real_makespan_s": round(real["makespan_s"], 3),
        "simulated_makespan_s": round(simulated.makespan_s, 3),
        "difference": round(difference, 4),
        "agree_within_10_percent": difference <= AGREEMENT_TARGET,
        "real_tasks_per_board_type": real["tasks_per_board_type"],
        "simulated_tasks_per_board_type": _per_type(simulated.tasks_per_device),
        "real_done": real["done"],
    }
