"""``makespan``: one burst of tasks on a heterogeneous cluster, every strategy, against the bound.

The cluster is the issue's: 1 Atlas 310, 2 RK3588 (three NPU cores each), 1 Jetson Orin, each
with its profile's slots and published service times (time scale 1). Every link fluctuates over
the seed's ``--bandwidth-fluctuate`` range, and one RK3588 sits on a slow link (Wi-Fi or LTE), so
where a payload goes matters. The same scenario, seed for seed, runs through every strategy.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from edgesched.agent.emulation import PROFILES
from edgesched.agent.pacing import SEED_RANGE_MBPS
from edgesched.core.strategies import STRATEGIES
from edgesched.sim.model import Link, Scenario, SimDevice, SimTask, lower_bound, sub_seed
from edgesched.sim.simulator import simulate

WANTED = ("roundrobin", "load", "ect")  #: in this order; one not registered yet is left out
PAYLOAD_BYTES = (100_000, 300_000)  #: a document page as a JPEG
MASTER_MBPS = 1000.0  #: the master on gigabit Ethernet
ECT_TARGET = 1.10  #: the issue's gate: ect's makespan within 10 % of the bound

LOW, HIGH = SEED_RANGE_MBPS
CLUSTER = (
    SimDevice("atlas310-1", PROFILES["atlas310"], Link(LOW, HIGH)),
    SimDevice("orin-1", PROFILES["orin"], Link(LOW, HIGH)),
    SimDevice("rk3588-1", PROFILES["rk3588"], Link(LOW, HIGH)),
    SimDevice("rk3588-2", PROFILES["rk3588"], Link(10.0, 40.0, rtt_ms=20.0)),
)


def workload(tasks: int, seed: int) -> tuple[SimTask, ...]:
    """``tasks`` layout tasks, all submitted at t = 0, payload sizes uniform in PAYLOAD_BYTES."""
    rng = random.Random(sub_seed(seed, "workload"))
    return tuple(SimTask(f"t{i:05d}", rng.randint(*PAYLOAD_BYTES)) for i in range(tasks))


def strategies() -> list[str]:
    return [name for name in WANTED if name in STRATEGIES]


def run_makespan(tasks: int = 1000, seed: int = 1, plot_path: Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    scenario = Scenario(CLUSTER, workload(tasks, seed), master_mbps=MASTER_MBPS, seed=seed)
    bound = lower_bound(scenario)
    lb = bound.value_s
    results: dict[str, Any] = {}
    for name in strategies():
        r = simulate(scenario, name)
        results[name] = {
            "makespan_s": round(r.makespan_s, 6),
            "ratio_to_lb": round(r.makespan_s / lb, 4),
            "ratio_to_links_estimate": round(r.makespan_s / bound.links_s, 4),
            "mean_latency_s": round(r.mean_latency_s, 6),
            "tasks_per_device": r.tasks_per_device,
            "done": r.done,
            "devices": {
                d: {k: round(v, 4) for k, v in stats.items()} for d, stats in r.device_stats.items()
            },
        }
    out: dict[str, Any] = {
        "scenario": "makespan",
        "tasks": tasks,
        "seed": seed,
        "cluster": _describe(scenario),
        "lower_bound_s": round(lb, 6),
        "bound_terms": {k: round(v, 6) for k, v in bound.as_dict().items()},
        "strategies": results,
        "gates": _gates(results),
    }
    if plot_path is not None:
        plot_makespan(out, plot_path)
        out["plot"] = str(plot_path)
    out["runtime_s"] = round(time.perf_counter() - started, 3)
    out["machine"] = machine()
    return out


def _gates(results: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets; None where a strategy is missing."""
    ect = results.get("ect")
    rr, load = results.get("roundrobin"), results.get("load")
    return {
        "ect_within_1_10_lb": None if ect is None else ect["ratio_to_lb"] <= ECT_TARGET,
        "load_below_roundrobin": (
            None if rr is None or load is None else load["makespan_s"] < rr["makespan_s"]
        ),
    }


def _describe(scenario: Scenario) -> dict[str, Any]:
    return {
        "devices": [
            {
                "id": d.id,
                "profile": d.profile.name,
                "slots": d.slot_count,
                "service_ms": {"median": d.profile.median_ms, "p95": d.profile.p95_ms},
                "link_mbps": [d.link.low_mbps, d.link.high_mbps],
                "link_step_s": d.link.step_s,
                "rtt_ms": d.link.rtt_ms,
            }
            for d in scenario.devices
        ],
        "master_mbps": scenario.master_mbps,
        "payload_bytes": list(PAYLOAD_BYTES),
        "arrivals": "all at t=0",
        "time_scale": 1,
    }


def machine() -> dict[str, Any]:
    """What ran it, for docs/benchmarks.md (simulated time does not depend on it; runtime does)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass  # not Linux: platform's answer stays
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def plot_makespan(result: dict[str, Any], path: Path) -> None:
    """Bars of makespan per strategy, the bound as a line (and 1.10 × it, the ect target)."""
    # matplotlib is only needed here: the simulator and the CLI's JSON work without it
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(result["strategies"])
    values = [result["strategies"][n]["makespan_s"] for n in names]
    lb = result["lower_bound_s"]
    links = result["bound_terms"]["links_s"]
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.add_subplot()
    bars = ax.bar(names, values, color="#4c72b0", width=0.55)
    for bar, name in zip(bars, names, strict=True):
        ratio = result["strategies"][name]["ratio_to_lb"]
        ax.annotate(
            f"{bar.get_height():.2f} s\n{ratio:.2f}× LB",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(lb, color="#c44e52", label=f"lower bound LB = {lb:.2f} s")
    ax.axhline(lb * ECT_TARGET, color="#c44e52", linestyle="--", label="1.10 × LB (ect target)")
    ax.axhline(links, color="#55a868", linestyle=":", label=f"links-capped estimate {links:.2f} s")
    ax.set_ylabel("makespan (simulated s)")
    ax.set_ylim(0, max([*values, lb * ECT_TARGET, links]) * 1.2)
    ax.set_title(
        f"{result['tasks']} tasks, 1 atlas310 + 2 rk3588 + 1 orin, seed {result['seed']}",
        fontsize=10,
    )
    # under the axes: inside, it would cover a bar
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
