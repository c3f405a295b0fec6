"""Board emulation: profiles by name, seeded service times, slot-occupancy utilisation."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from edgesched.agent.emulation import PROFILES, SlotMeter, get_profile
from edgesched.boards import ALIASES
from edgesched.errors import ConfigError, UnknownPluginError

SAMPLES = 20_000


# ---- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["atlas310", "rk3588", "orin"])
def test_every_board_has_a_profile_under_its_name(name):
    assert get_profile(name).name == name


@pytest.mark.parametrize(
    ("alias", "name"), [("ATLAS_I", "atlas310"), ("RK3588", "rk3588"), ("ORIN", "orin")]
)
def test_the_seeds_device_type_names_find_the_same_profiles(alias, name):
    assert get_profile(alias) is PROFILES[name]


def test_profile_names_are_case_insensitive():
    assert get_profile("Orin") is PROFILES["orin"]
    assert get_profile("ATLAS310") is PROFILES["atlas310"]


def test_an_unknown_profile_raises_and_lists_the_known_names():
    with pytest.raises(UnknownPluginError) as info:
        get_profile("tpu")
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert "'tpu'" in message
    for known in [*PROFILES, *ALIASES]:
        assert known in message


def test_the_boards_have_their_published_slots_and_formats():
    assert get_profile("atlas310").slots == 1
    assert get_profile("rk3588").slots == 3  # one runtime per NPU core
    assert get_profile("orin").slots == 1
    assert get_profile("atlas310").formats[0] == "om"
    assert get_profile("rk3588").formats[0] == "rknn"
    assert get_profile("orin").formats[0] == "engine"
    for profile in PROFILES.values():
        assert "onnx" in profile.formats


def test_relative_speeds_match_the_boards():
    orin, atlas, rk = (get_profile(n).median_ms for n in ("orin", "atlas310", "rk3588"))
    assert orin < atlas < rk


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_lognormal_shape_puts_the_p95_where_the_profile_says(name):
    profile = PROFILES[name]
    assert profile.p95_ms > profile.median_ms
    assert profile.median_ms * math.exp(1.6449 * profile.sigma) == pytest.approx(profile.p95_ms)


# ---- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_median_of_many_samples_is_the_profiles_median(name):
    profile = PROFILES[name]
    rng = random.Random(1234)
    samples = [profile.sample_ms(rng) for _ in range(SAMPLES)]
    assert statistics.median(samples) == pytest.approx(profile.median_ms, rel=0.05)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_about_five_percent_of_samples_are_above_the_p95(name):
    profile = PROFILES[name]
    rng = random.Random(99)
    above = sum(profile.sample_ms(rng) > profile.p95_ms for _ in range(SAMPLES))
    # the standard error of the fraction is about 0.15 %; allow 1 %
    assert above / SAMPLES == pytest.approx(0.05, abs=0.01)


def test_samples_are_positive_and_reproducible_from_the_seed():
    profile = get_profile("rk3588")
    first = [profile.sample_ms(random.Random(7)) for _ in range(3)]
    a, b = random.Random(7), random.Random(7)
    run_a = [profile.sample_ms(a) for _ in range(100)]
    run_b = [profile.sample_ms(b) for _ in range(100)]
    assert run_a == run_b
    assert all(x > 0 for x in run_a)
    assert len(set(first)) == 1


# ---- slot meter -----------------------------------------------------------------------------


def test_one_of_two_slots_busy_for_the_whole_interval_is_half_utilised():
    meter = SlotMeter(2, 0.0)
    meter.start(0.0)
    assert meter.utilisation(1.0) == pytest.approx(0.5)


def test_utilisation_integrates_busy_slots_over_the_interval():
    meter = SlotMeter(1, 0.0)
    meter.start(0.25)
    meter.stop(0.75)
    assert meter.utilisation(1.0) == pytest.approx(0.5)


def test_each_reading_covers_only_the_time_since_the_previous_one():
    meter = SlotMeter(2, 0.0)
    meter.start(0.0)
    assert meter.utilisation(1.0) == pytest.approx(0.5)
    assert meter.utilisation(2.0) == pytest.approx(0.5)  # still busy
    meter.start(2.5)
    # 1 slot for the whole second, a second slot for its last half: 1.5 / 2
    assert meter.utilisation(3.0) == pytest.approx(0.75)
    meter.stop(3.0)
    meter.stop(3.0)
    assert meter.utilisation(4.0) == 0.0


def test_a_reading_over_no_time_is_the_current_occupancy():
    meter = SlotMeter(4, 5.0)
    meter.start(5.0)
    assert meter.utilisation(5.0) == pytest.approx(0.25)


def test_utilisation_stays_within_zero_and_one():
    meter = SlotMeter(1, 0.0)
    for _ in range(3):
        meter.start(0.0)
    assert meter.utilisation(1.0) == 1.0
    for _ in range(5):
        meter.stop(1.0)
    assert meter.busy == 0
    assert meter.utilisation(2.0) == 0.0


def test_a_meter_with_no_slots_counts_as_one_slot():
    meter = SlotMeter(0, 0.0)
    assert meter.slots == 1
    meter.start(0.0)
    assert meter.utilisation(2.0) == 1.0


def test_time_going_backwards_adds_no_busy_time():
    meter = SlotMeter(1, 10.0)
    meter.start(10.0)
    meter.stop(9.0)
    assert meter.utilisation(11.0) == 0.0
