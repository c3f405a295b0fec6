"""The seed's label-file format: golden strings, order, parsing and round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesched.errors import BadInputError
from edgesched.inference.labels import Detection, format_label, parse_label


def det(conf: float, class_id: int = 0, box: tuple[int, int, int, int] = (1, 2, 3, 4)) -> Detection:
    return Detection(class_id, *box, confidence=conf, class_name="text")


def test_golden_line_rounds_confidence_to_six_significant_digits() -> None:
    assert format_label([det(0.123456789, 3, (10, 20, 300, 400))]) == "3 10 20 300 400 0.123457\n"


@pytest.mark.parametrize(
    ("conf", "printed"),
    [(1.0, "1"), (0.5, "0.5"), (0.25, "0.25"), (0.0, "0"), (1e-05, "1e-05"), (0.9999996, "1")],
)
def test_confidence_prints_like_c_percent_g(conf: float, printed: str) -> None:
    assert format_label([det(conf)]) == f"0 1 2 3 4 {printed}\n"


def test_lines_in_ascending_confidence_order() -> None:
    text = format_label([det(0.9, 1), det(0.1, 2), det(0.5, 3)])
    assert text == "2 1 2 3 4 0.1\n3 1 2 3 4 0.5\n1 1 2 3 4 0.9\n"


def test_equal_confidences_keep_their_order() -> None:
    assert format_label([det(0.5, 7), det(0.5, 2)]) == "7 1 2 3 4 0.5\n2 1 2 3 4 0.5\n"


def test_nothing_found_is_an_empty_file() -> None:
    assert format_label([]) == ""
    assert parse_label("") == []


def test_large_coordinates_stay_whole() -> None:
    # "%g" would print 1234567 as 1.23457e+06 and lose the pixel.
    assert format_label([det(0.5, 0, (0, 0, 1234567, 7))]) == "0 0 0 1234567 7 0.5\n"


def test_parse_reads_the_seed_format() -> None:
    dets = parse_label("2 1 2 3 4 0.1\n\n1 10 20 30 40 0.9\n")
    assert dets == [Detection(2, 1, 2, 3, 4, 0.1), Detection(1, 10, 20, 30, 40, 0.9)]
    assert all(d.class_name == "" for d in dets)


def test_parse_accepts_integers_written_by_percent_g_and_no_final_newline() -> None:
    assert parse_label("1 1e+06 2 3 4 1") == [Detection(1, 1_000_000, 2, 3, 4, 1.0)]


@pytest.mark.parametrize(
    "line",
    [
        "1 2 3 4 0.5",  # five fields
        "1 2 3 4 5 0.5 7",  # seven fields
        "a 2 3 4 5 0.5",
        "1 2 3 4 5 high",
        "1 2.5 3 4 5 0.5",  # coordinates are whole pixels
        "-1 2 3 4 5 0.5",
        "1 2 3 4 5 nan",
        "1 inf 3 4 5 0.5",
    ],
)
def test_malformed_lines_raise_bad_input(line: str) -> None:
    with pytest.raises(BadInputError, match="label line 2"):
        parse_label("0 0 0 1 1 0.5\n" + line + "\n")


@given(st.floats(min_value=0, max_value=1, allow_nan=False))
def test_format_g_is_c_percent_g(conf: float) -> None:
    assert f"{conf:g}" == "%g" % conf  # noqa: UP031 - the point is to compare with C's %g


@given(
    st.lists(
        st.tuples(
            st.integers(0, 999),
            st.integers(0, 99_999),
            st.integers(0, 99_999),
            st.integers(0, 99_999),
            st.integers(0, 99_999),
            st.floats(min_value=0, max_value=1, allow_nan=False),
        ),
        max_size=20,
    )
)
def test_round_trip_sorts_and_rounds(rows: list[tuple[int, int, int, int, int, float]]) -> None:
    dets = [Detection(c, x1, y1, x2, y2, conf) for c, x1, y1, x2, y2, conf in rows]
    parsed = parse_label(format_label(dets))
    assert len(parsed) == len(dets)
    assert [d.confidence for d in parsed] == sorted(d.confidence for d in parsed)
    expected = sorted(
        (d.class_id, d.x1, d.y1, d.x2, d.y2, float(f"{d.confidence:g}")) for d in dets
    )
    got = sorted((d.class_id, d.x1, d.y1, d.x2, d.y2, d.confidence) for d in parsed)
    assert got == expected
    for d in parsed:
        assert math.isfinite(d.confidence)
