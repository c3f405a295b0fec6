"""The one percentile: the interpolated figures of the client's and demo's reports and the
dashboard, the nearest-rank figures of the scale benchmark."""

from __future__ import annotations

import math

import pytest

from edgesched.stats import Method, percentile


def test_inclusive_interpolates_between_the_nearest_values() -> None:
    values = [100.0, 300.0, 500.0]
    assert percentile(values, 50) == 300.0
    assert percentile(values, 95) == pytest.approx(480.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_nearest_rank_is_always_one_of_the_values() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50, "nearest_rank") == 2.0
    assert percentile(values, 99, "nearest_rank") == 4.0
    assert percentile(values, 0, "nearest_rank") == 1.0


@pytest.mark.parametrize("method", ["inclusive", "nearest_rank"])
def test_one_value_is_every_percentile_and_none_is_nan(method: Method) -> None:
    assert percentile([7.5], 50, method) == 7.5
    assert math.isnan(percentile([], 50, method))
