"""Placement strategies: round-robin rotation, the load score's worked examples, lookup by name."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesched.config import SchedulingSettings
from edgesched.core.state import Device, Metrics, Task, clean_fraction
from edgesched.core.strategies import (
    ALIASES,
    STRATEGIES,
    EarliestCompletion,
    LoadGreedy,
    RoundRobin,
    canonical_strategy,
    load_score,
    make_strategy,
    network_ms,
)
from edgesched.errors import ConfigError, UnknownPluginError

DEFAULTS = SchedulingSettings()


def device(
    device_id: str = "d1",
    *,
    slots: int = 2,
    inflight: int = 0,
    sent: int = 0,
    cpu: float = 0.0,
    memory: float = 0.0,
    xpu: float = -1.0,
    bandwidth: float = 100.0,
    latency: float = 0.0,
) -> Device:
    d = Device(id=device_id, device_type="cpu", slots=slots, task_types=frozenset({"layout"}))
    d.metrics = Metrics(
        cpu=cpu, memory=memory, xpu=xpu, bandwidth_mbps=bandwidth, latency_ms=latency
    )
    d.inflight = {(f"busy{i}", 1) for i in range(inflight)}
    d.sent_since_heartbeat = sent
    return d


def task(size_bytes: int = 0) -> Task:
    return Task(id="t", task_type="layout", size_bytes=size_bytes, submitted_at=0.0)


# ---- round-robin --------------------------------------------------------------------------


def test_round_robin_rotates_over_the_candidates_in_id_order():
    rr = RoundRobin(DEFAULTS, random.Random(0))
    candidates = [device("a"), device("b"), device("c")]
    picks = [rr.choose(task(), candidates).id for _ in range(7)]
    assert picks == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_continues_after_the_last_device_chosen_when_candidates_change():
    rr = RoundRobin(DEFAULTS, random.Random(0))
    a, b, c, d = device("a"), device("b"), device("c"), device("d")
    assert rr.choose(task(), [a, b, c, d]).id == "a"
    assert rr.choose(task(), [a, b, c, d]).id == "b"
    # b is busy now: the rotation goes on with the next id after b, not back to a
    assert rr.choose(task(), [a, c, d]).id == "c"
    # only devices before the last one chosen are left: wrap around to the first
    assert rr.choose(task(), [a, b]).id == "a"


def test_round_robin_gives_a_device_that_joins_mid_rotation_its_turn():
    rr = RoundRobin(DEFAULTS, random.Random(0))
    a, b, c = device("a"), device("b"), device("c")
    assert rr.choose(task(), [a, c]).id == "a"
    assert rr.choose(task(), [a, b, c]).id == "b"
    assert rr.choose(task(), [a, b, c]).id == "c"


def test_round_robin_with_one_candidate_always_picks_it():
    rr = RoundRobin(DEFAULTS, random.Random(0))
    only = device("only")
    assert all(rr.choose(task(), [only]) is only for _ in range(3))


def test_round_robin_spreads_evenly_over_many_picks():
    rr = RoundRobin(DEFAULTS, random.Random(0))
    candidates = [device(name) for name in ("d1", "d2", "d3", "d4")]
    counts = Counter(rr.choose(task(), candidates).id for _ in range(400))
    assert set(counts.values()) == {100}


# ---- the load score: worked examples --------------------------------------------------------


def test_network_time_is_transfer_time_plus_round_trip():
    # 125 000 bytes = 1 Mbit; at 100 Mbit/s that is 10 ms, plus 10 ms of latency
    d = device(bandwidth=100.0, latency=10.0)
    assert network_ms(d, 125_000, assumed_bandwidth_mbps=1.0) == pytest.approx(20.0)


def test_network_time_uses_the_assumed_bandwidth_until_one_is_measured():
    d = device(bandwidth=0.0, latency=0.0)
    assert network_ms(d, 125_000, assumed_bandwidth_mbps=10.0) == pytest.approx(100.0)


def test_a_negative_latency_counts_as_none():
    d = device(bandwidth=100.0, latency=-50.0)
    assert network_ms(d, 125_000, assumed_bandwidth_mbps=1.0) == pytest.approx(10.0)


def test_load_score_worked_example_with_everything_in_play():
    d = device(
        slots=2,
        inflight=1,
        sent=1,
        cpu=0.5,
        memory=0.2,
        xpu=0.1,
        bandwidth=100.0,
        latency=10.0,
    )
    # cpu      0.3 · 0.5                         = 0.15
    # memory   0.1 · 0.2                         = 0.02
    # xpu      0.4 · (0.1 + 1 sent / 2 slots)    = 0.24
    # network  0.2 · (10 ms + 10 ms) / 100 ms    = 0.04
    # slots    0.5 · 1 in use / 2 slots          = 0.25
    assert load_score(d, 125_000, DEFAULTS) == pytest.approx(0.70)


def test_load_score_of_a_device_without_an_xpu_figure_uses_its_cpu_in_the_xpu_term():
    d = device(slots=4, cpu=0.2, memory=0.5, xpu=-1.0, bandwidth=0.0, latency=0.0)
    # cpu 0.3·0.2 + memory 0.1·0.5 + xpu 0.4·0.2 (the CPU) + network 0.2·(100 ms / 100 ms)
    # (1 250 000 bytes at the assumed 100 Mbit/s take 100 ms) + slots 0
    assert load_score(d, 1_250_000, DEFAULTS) == pytest.approx(0.06 + 0.05 + 0.08 + 0.2)


def test_load_score_caps_the_optimistic_xpu_estimate_at_one():
    d = device(slots=1, inflight=1, sent=1, xpu=0.9, bandwidth=1000.0)
    # xpu 0.4 · min(1, 0.9 + 1/1) = 0.4; slots 0.5 · 1/1 = 0.5; everything else 0
    assert load_score(d, 0, DEFAULTS) == pytest.approx(0.9)


def test_load_score_cleans_out_of_range_and_missing_figures():
    d = device(cpu=1.5, memory=math.nan, xpu=-1.0, bandwidth=10.0, latency=-5.0)
    # cpu clamped to 1 (0.3), memory unknown → 0, xpu from the cpu (0.4), no network, no slots
    assert load_score(d, 0, DEFAULTS) == pytest.approx(0.7)


def test_load_score_follows_the_weights_in_the_settings():
    only_cpu = SchedulingSettings(
        weight_cpu=1.0, weight_memory=0.0, weight_xpu=0.0, weight_network=0.0, weight_slots=0.0
    )
    d = device(cpu=0.37, memory=0.9, xpu=0.8, inflight=1, latency=500.0)
    assert load_score(d, 10**6, only_cpu) == pytest.approx(0.37)
    only_network = SchedulingSettings(
        weight_cpu=0.0,
        weight_memory=0.0,
        weight_xpu=0.0,
        weight_network=1.0,
        weight_slots=0.0,
        network_reference_ms=50.0,
    )
    # 25 ms of latency over a 50 ms reference
    assert load_score(device(latency=25.0), 0, only_network) == pytest.approx(0.5)


def test_an_unmeasured_bandwidth_scores_like_the_assumed_bandwidth():
    unmeasured = device(bandwidth=0.0, latency=3.0, cpu=0.4)
    assumed = device(bandwidth=DEFAULTS.assumed_bandwidth_mbps, latency=3.0, cpu=0.4)
    assert load_score(unmeasured, 500_000, DEFAULTS) == pytest.approx(
        load_score(assumed, 500_000, DEFAULTS)
    )


def test_more_bandwidth_is_better_not_worse():
    slow = device(bandwidth=10.0)
    fast = device(bandwidth=1000.0)
    assert load_score(fast, 1_000_000, DEFAULTS) < load_score(slow, 1_000_000, DEFAULTS)


def test_tasks_sent_since_the_last_heartbeat_make_a_device_look_busier():
    before = device(slots=4, xpu=0.0)
    after = device(slots=4, xpu=0.0, sent=2, inflight=2)
    assert load_score(after, 0, DEFAULTS) > load_score(before, 0, DEFAULTS)


fractions = st.floats(min_value=0.0, max_value=1.0)
bandwidths = st.floats(min_value=0.01, max_value=100_000.0)
latencies = st.floats(min_value=0.0, max_value=10_000.0)
payloads = st.integers(min_value=0, max_value=50_000_000)


@st.composite
def devices(draw, device_id: str = "d") -> Device:
    slots = draw(st.integers(min_value=1, max_value=8))
    return device(
        device_id,
        slots=slots,
        inflight=draw(st.integers(min_value=0, max_value=slots)),
        sent=draw(st.integers(min_value=0, max_value=slots)),
        cpu=draw(fractions),
        memory=draw(fractions),
        xpu=draw(st.one_of(st.just(-1.0), fractions)),
        bandwidth=draw(bandwidths),
        latency=draw(latencies),
    )


@settings(max_examples=200, deadline=None)
@given(devices(), bandwidths, bandwidths, payloads)
def test_more_bandwidth_never_gives_a_worse_score(d, b1, b2, payload):
    low, high = sorted((b1, b2))
    d.metrics.bandwidth_mbps = low
    slow = load_score(d, payload, DEFAULTS)
    d.metrics.bandwidth_mbps = high
    assert load_score(d, payload, DEFAULTS) <= slow


@settings(max_examples=200, deadline=None)
@given(devices(), latencies, latencies, payloads)
def test_higher_latency_always_gives_a_worse_score(d, l1, l2, payload):
    low, high = sorted((l1, l2))
    d.metrics.latency_ms = low
    near = load_score(d, payload, DEFAULTS)
    d.metrics.latency_ms = high
    far = load_score(d, payload, DEFAULTS)
    assert far >= near
    if high > low + 1.0:
        assert far > near


@settings(max_examples=200, deadline=None)
@given(devices("a"), devices("b"), st.lists(devices("z"), max_size=4), payloads)
def test_a_devices_score_never_depends_on_the_other_candidates(a, b, others, payload):
    t = task(payload)
    score_a, score_b = load_score(a, payload, DEFAULTS), load_score(b, payload, DEFAULTS)
    strategy = LoadGreedy(DEFAULTS, random.Random(0))
    picked = strategy.choose(t, [a, b, *others])
    # no scaling over the candidates: scores are unchanged and the pick is a true minimum
    assert load_score(a, payload, DEFAULTS) == score_a
    assert load_score(b, payload, DEFAULTS) == score_b
    scores = [load_score(d, payload, DEFAULTS) for d in [a, b, *others]]
    assert load_score(picked, payload, DEFAULTS) <= min(scores) + 1e-9
    # the choice between a and b is the same with or without the others
    if picked in (a, b) and abs(score_a - score_b) > 1e-9:
        assert picked is (a if score_a < score_b else b)
        assert strategy.choose(t, [a, b]) is picked


@settings(max_examples=200, deadline=None)
@given(devices())
def test_the_score_is_finite_and_not_negative(d):
    score = load_score(d, 1_000_000, DEFAULTS)
    assert math.isfinite(score)
    assert score >= 0.0


# ---- load-greedy ----------------------------------------------------------------------------


def test_load_greedy_picks_the_device_with_the_lowest_score():
    idle = device("b-idle", cpu=0.1)
    busy = device("a-busy", cpu=0.9)
    far = device("c-far", cpu=0.1, latency=200.0)
    assert LoadGreedy(DEFAULTS, random.Random(0)).choose(task(), [busy, idle, far]) is idle


def test_load_greedy_prefers_the_faster_link_for_a_big_payload():
    slow = device("a", bandwidth=10.0)
    fast = device("b", bandwidth=1000.0)
    assert LoadGreedy(DEFAULTS, random.Random(0)).choose(task(5_000_000), [slow, fast]) is fast


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_load_greedy_breaks_exact_ties_with_the_injected_rng(seed):
    twins = [device("a", cpu=0.3), device("b", cpu=0.3), device("c", cpu=0.3)]
    expected = random.Random(seed).choice(twins)
    assert LoadGreedy(DEFAULTS, random.Random(seed)).choose(task(), twins) is expected


def test_load_greedy_spreads_exact_ties_over_all_tied_devices():
    twins = [device("a", cpu=0.3), device("b", cpu=0.3)]
    loser = device("c", cpu=0.9)
    strategy = LoadGreedy(DEFAULTS, random.Random(7))
    counts = Counter(strategy.choose(task(), [*twins, loser]).id for _ in range(200))
    assert set(counts) == {"a", "b"}
    assert min(counts.values()) > 50


def test_load_greedy_does_not_consult_the_rng_without_a_tie():
    class NoRng(random.Random):
        def choice(self, seq):
            raise AssertionError("rng used without a tie")

    strategy = LoadGreedy(DEFAULTS, NoRng(0))
    assert strategy.choose(task(), [device("a", cpu=0.2), device("b", cpu=0.4)]).id == "a"


# ---- lookup by name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("load", "load"),
        ("roundrobin", "roundrobin"),
        ("round_robin", "roundrobin"),
        ("负载贪心", "load"),
        ("", "load"),
        ("  roundrobin  ", "roundrobin"),
    ],
)
def test_canonical_strategy_accepts_names_and_the_seeds_aliases(name, expected):
    assert canonical_strategy(name) == expected


def test_an_unknown_strategy_name_raises_and_lists_the_known_names():
    with pytest.raises(UnknownPluginError) as info:
        canonical_strategy("fastest")
    message = str(info.value)
    assert "'fastest'" in message
    for known in ("load", "roundrobin", "round_robin", "负载贪心"):
        assert known in message
    assert info.value.kind == "strategy"
    assert info.value.name == "fastest"
    assert isinstance(info.value, ConfigError)


def test_every_alias_points_at_a_registered_strategy():
    assert set(ALIASES.values()) <= set(STRATEGIES)


@pytest.mark.parametrize(
    ("name", "cls"), [("roundrobin", RoundRobin), ("load", LoadGreedy), ("", LoadGreedy)]
)
def test_make_strategy_builds_the_strategy_registered_under_the_name(name, cls):
    strategy = make_strategy(name, DEFAULTS, random.Random(0))
    assert isinstance(strategy, cls)
    assert strategy.name == canonical_strategy(name)


def test_make_strategy_refuses_an_unknown_name():
    with pytest.raises(UnknownPluginError):
        make_strategy("nope", DEFAULTS, random.Random(0))


@settings(max_examples=100, deadline=None)
@given(st.lists(devices(), min_size=1, max_size=6), payloads, st.integers(0, 2**32))
def test_load_chooses_a_device_of_the_lowest_score_also_after_new_reports(devs, payload, seed):
    for i, d in enumerate(devs):
        d.id = f"d{i}"
    strategy = LoadGreedy(DEFAULTS, random.Random(seed))
    task = Task(id="t", task_type="layout", size_bytes=payload, submitted_at=0.0)
    for _ in range(2):  # the second round sees every device with a new report
        best = min(load_score(d, payload, DEFAULTS) for d in devs)
        chosen = strategy.choose(task, devs)
        assert load_score(chosen, payload, DEFAULTS) <= best + 2e-9
        for d in devs:  # a heartbeat replaces the report; cached terms must not survive it
            d.metrics = Metrics(cpu=1.0 - clean_fraction(d.metrics.cpu), memory=0.5, xpu=-1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(devices(), min_size=1, max_size=6), payloads)
def test_ect_chooses_among_the_devices_of_the_earliest_expected_completion(devs, payload):
    for i, d in enumerate(devs):
        d.id = f"d{i}"
        d.device_type = ("orin", "rk3588", "atlas310")[i % 3]
        d.prefetch = i % 2
    strategy = EarliestCompletion(DEFAULTS, random.Random(0))
    task = Task(id="t", task_type="layout", size_bytes=payload, submitted_at=0.0)
    for _ in range(2):  # the second round sees every device with a new report
        best = min(strategy.expected_ms(task, d) for d in devs)
        chosen = strategy.choose(task, devs)
        assert strategy.expected_ms(task, chosen) <= best * 1.02 + 1e-6
        for d in devs:
            d.metrics = Metrics(bandwidth_mbps=5.0, latency_ms=3.0)
