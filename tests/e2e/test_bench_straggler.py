"""`edgesched bench straggler` at a tiny size: four emulated boards, one slowed for a window, a
short stream with hedging off and on and on the healthy cluster. Every figure is in its JSON and
nothing is left running; no assertion on latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchcli import bench_json, left_running

pytestmark = [pytest.mark.e2e, pytest.mark.auth]


def test_straggler_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        *("--time-scale", "10", "--duration", "4", "--load", "0.3"),
        *("--slow-at", "1", "--slow-for", "2", "--lead", "10"),
        *("--timeout", "150", "--workdir", str(work), "--json"),
    ]
    result = bench_json("straggler", *args, timeout=200)
    assert result["boards"] == "4 × rk3588"
    assert result["slow"] == {"factor": 10.0, "at_s": 1.0, "for_s": 2.0}
    cases = [(c["case"], c["hedging"]) for c in result["cases"]]
    assert cases == [("straggler", "off"), ("straggler", "on"), ("healthy", "on")]
    for case in result["cases"]:
        assert case["load"]["done"] == result["tasks"]  # every task delivered
        assert case["load"]["failed"] == 0
        lat = case["latency_ms"]
        assert lat["count"] == result["tasks"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
        assert case["work_ms"] > 0
        assert 0.0 <= case["wasted_share"] < 1.0
        assert case["settings"]["hedging_supported"] is result["hedging_supported"]
    slowed, healthy = result["cases"][0], result["cases"][2]
    start, end = slowed["slow_window_s"]  # as the slowed agent logged it
    assert end - start == pytest.approx(2.0, abs=0.01)
    assert healthy["slow_window_s"] is None and healthy["slow_factor"] == 1.0
    assert set(result["comparison"]) == {
        "straggler_hedging_off",
        "straggler_hedging_on",
        "healthy_hedging_on",
    }
    assert "p99_ratio_to_healthy" in result["comparison"]["straggler_hedging_off"]
    assert not left_running(work)
