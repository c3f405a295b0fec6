"""``edgesched bench straggler --simulate``: the failure models of hedging in the simulator.

The same cluster and stream as the real ``bench straggler`` (boards of one kind, a fixed rate at
a share of capacity), run by the simulator around the real core over many seeds, per failure
model, with hedging off and on:

- ``healthy``: no failure (what hedging costs when nothing fails);
- ``slowed``: one board ``factor`` × slower for a window (a straggler);
- ``killed``: one board's agent dies at the window's start: its link breaks at once;
- ``frozen``: one board hangs at the window's start: silent, its link stays up.

Per model and mode: p50/p99 end-to-end latency, the wasted work (slot-seconds of attempts whose
result was not taken) and its share of all work, extra attempts; medians over the seeds. The
core reads ``scheduling.hedging`` from the settings it is built with; a build without it runs
both modes alike (``hedging_supported: false``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

from edgesched.agent.emulation import get_profile
from edgesched.config import SchedulingSettings
from edgesched.stats import percentile
from edgesched.tools.bench import hedging
from edgesched.tools.sim import Link, Scenario, SimDevice, SimTask, simulate

MODELS = ("healthy", "slowed", "killed", "frozen")

# targets of issue 17, printed beside the figures (the real run's too)
TARGET_P99_RATIO = 1.5
TARGET_WASTED_SHARE = 0.05
TARGET_HEALTHY_EXTRA = 0.01


def capacity_per_s(profile_name: str, boards: int, time_scale: float) -> float:
    """Tasks a second the boards finish when every slot is busy (lognormal means)."""
    p = get_profile(profile_name)
    mean_s = p.median_ms * math.exp(p.sigma**2 / 2) * time_scale / 1000
    return boards * p.slots / mean_s


PAYLOAD_BYTES = 2_000  #: the real benchmark's small JPEG, about


def scenario(
    model: str,
    seed: int,
    profile: str,
    boards: int,
    time_scale: float,
    rate: float,
    duration_s: float,
    slow: tuple[float, float, float],
    on: bool,
) -> Scenario:
    factor, at_s, for_s = slow
    victim = SimDevice("board-0", get_profile(profile), Link(500.0, 500.0))
    if model == "slowed":
        victim = replace(victim, slow_factor=factor, slow_from=at_s, slow_for=for_s)
    elif model in ("killed", "frozen"):
        victim = replace(victim, fails_at=at_s, link_lost=model == "killed")
    devices = (
        victim,
        *(
            SimDevice(f"board-{i}", get_profile(profile), Link(500.0, 500.0))
            for i in range(1, boards)
        ),
    )
    count = max(1, round(rate * duration_s))
    tasks = tuple(SimTask(f"t{i:06d}", PAYLOAD_BYTES, at=i / rate) for i in range(count))
    return Scenario(
        devices=devices,
        tasks=tasks,
        seed=seed,
        settings=hedging.settings_with(SchedulingSettings(), on),
        time_scale=time_scale,
    )


def run_one(sc: Scenario) -> dict[str, float]:
    r = simulate(sc, sc.settings.strategy)
    if not r.latencies_s:  # every task dead: no latency to speak of (and no NaN in the JSON)
        raise ValueError(f"seed {sc.seed}: no task was done ({r.dead} dead)")
    total = r.work_s + r.wasted_s
    return {
        "p50_ms": percentile(r.latencies_s, 50, "nearest_rank") * 1000,
        "p99_ms": percentile(r.latencies_s, 99, "nearest_rank") * 1000,
        # a killed or frozen board holds a handful of tasks: fewer than 1 %, so the p99 may not
        # see them; the slowest task does
        "max_ms": max(r.latencies_s, default=0.0) * 1000,
        "wasted_share": r.wasted_s / total if total > 0 else 0.0,
        "wasted_s": r.wasted_s,
        "extra_attempts": r.assigns - len(sc.tasks),
        "dead": r.dead,
    }


def run_models(
    seeds: list[int],
    profile: str,
    boards: int,
    time_scale: float,
    load: float,
    duration_s: float,
    slow: tuple[float, float, float],
    modes: list[bool],
) -> dict[str, Any]:
    rate = load * capacity_per_s(profile, boards, time_scale)
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for model in MODELS:
        figures[model] = {}
        for on in modes if model != "healthy" else sorted({*modes, True}):
            runs = [
                run_one(scenario(model, s, profile, boards, time_scale, rate, duration_s, slow, on))
                for s in seeds
            ]
            median = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
            median["worst_p99_ms"] = round(max(r["p99_ms"] for r in runs), 1)
            figures[model][hedging.label(on)] = median
    return {
        "benchmark": "straggler",
        "simulated": True,
        "seeds": seeds,
        "boards": f"{boards} × {profile}",
        "time_scale": time_scale,
        "load": load,
        "rate_per_s": round(rate, 3),
        "tasks": max(1, round(rate * duration_s)),
        "slow": {"factor": slow[0], "at_s": slow[1], "for_s": slow[2]},
        "failure_at_s": slow[1],
        "hedging_supported": hedging.supported(),
        "models": figures,
        "targets": {
            "p99_ratio_to_healthy": TARGET_P99_RATIO,
            "wasted_share": TARGET_WASTED_SHARE,
            "healthy_extra_work_share": TARGET_HEALTHY_EXTRA,
        },
        "comparison": _compare(figures),
    }


def _compare(figures: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    healthy = figures["healthy"].get("on")
    out: dict[str, Any] = {}
    for model, modes in figures.items():
        for mode, m in modes.items():
            entry: dict[str, Any] = {"wasted_share": m["wasted_share"]}
            if healthy and healthy["p99_ms"] > 0:
                entry["p99_ratio_to_healthy"] = round(m["p99_ms"] / healthy["p99_ms"], 2)
            out[f"{model}_hedging_{mode}"] = entry
    return out


def summary(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    slow = result["slow"]
    lines = [
        f"simulated: {result['boards']} at time scale {result['time_scale']:g}, "
        f"{result['tasks']} tasks at {result['rate_per_s']:g}/s; the failure at "
        f"{slow['at_s']:g} s (slowed ×{slow['factor']:g} for {slow['for_s']:g} s); medians over "
        f"seeds {seeds[0]}..{seeds[-1]}",
    ]
    if not result["hedging_supported"]:
        lines.append("this build has no scheduling.hedging: both modes ran without hedging")
    compare = result["comparison"]
    for model, modes in result["models"].items():
        for mode, m in modes.items():
            ratio = compare[f"{model}_hedging_{mode}"].get("p99_ratio_to_healthy")
            lines.append(
                f"  {model:<8} hedging {mode:<3}  p50 {m['p50_ms']:.0f} ms  p99 {m['p99_ms']:.0f} "
                f"ms ({ratio} × healthy; worst {m['worst_p99_ms']:.0f})  max {m['max_ms']:.0f} ms  "
                "wasted "
                f"{m['wasted_share']:.2%}  extra attempts {m['extra_attempts']:g}"
            )
    lines.append(f"ran in {result['runtime_s']:.1f} s")
    return "\n".join(lines)
