"""Synthetic pages (deterministic, varied, ground truth on disk) and the scoring rules."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from edgesched.inference.labels import Detection
from edgesched.tools.demo.pages import (
    GROUND_TRUTH_CLASSES,
    GROUND_TRUTH_FILE,
    Region,
    generate_page,
    load_ground_truth,
    page_seed,
    write_pages,
)
from edgesched.tools.demo.scoring import iou, match_page, score


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_same_seed_gives_byte_identical_png() -> None:
    first, regions1 = generate_page(11)
    second, regions2 = generate_page(11)
    assert png_bytes(first) == png_bytes(second)
    assert regions1 == regions2
    other, _ = generate_page(12)
    assert png_bytes(other) != png_bytes(first)


def test_regions_are_inside_the_page_and_well_formed() -> None:
    for seed in range(1, 9):
        image, regions = generate_page(seed)
        assert image.size == (1240, 1754)
        assert image.mode == "RGB"
        kinds = [r.class_name for r in regions]
        assert set(kinds) <= GROUND_TRUTH_CLASSES
        assert {"header", "footer", "title", "text"} <= set(kinds)
        for r in regions:
            x1, y1, x2, y2 = r.box
            assert 0 <= x1 < x2 <= 1240 and 0 <= y1 < y2 <= 1754, r


def test_layout_varies_with_the_seed() -> None:
    layouts = [generate_page(page_seed(0, i))[1] for i in range(1, 16)]
    two_columns = [any(r.class_name == "text" and r.box[0] > 620 for r in page) for page in layouts]
    assert any(two_columns) and not all(two_columns)
    assert len({sum(r.class_name == "text" for r in page) for page in layouts}) >= 3
    assert any(r.class_name == "figure" for page in layouts for r in page)
    assert any(r.class_name == "table" for page in layouts for r in page)
    # Figure before table on some pages, after on others.
    orders = set()
    for page in layouts:
        tops = {r.class_name: r.box[1] for r in page if r.class_name in ("figure", "table")}
        if len(tops) == 2:
            orders.add(tops["figure"] < tops["table"])
    assert orders == {True, False}


def test_other_page_sizes_scale() -> None:
    image, regions = generate_page(3, width=620, height=877)
    assert image.size == (620, 877)
    assert all(0 <= r.box[0] < r.box[2] <= 620 and 0 <= r.box[1] < r.box[3] <= 877 for r in regions)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_write_and_load_ground_truth(tmp_path: Path, fmt: str) -> None:
    truth = write_pages(tmp_path, 3, seed=5, fmt=fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"1.{fmt}", f"2.{fmt}", f"3.{fmt}", GROUND_TRUTH_FILE]
    )
    assert list(truth) == [f"1.{fmt}", f"2.{fmt}", f"3.{fmt}"]
    assert load_ground_truth(tmp_path) == truth
    with Image.open(tmp_path / f"2.{fmt}") as page:
        assert page.size == (1240, 1754)
    assert truth[f"2.{fmt}"] == generate_page(page_seed(5, 2))[1]


def test_write_pages_is_deterministic(tmp_path: Path) -> None:
    write_pages(tmp_path / "a", 2)
    write_pages(tmp_path / "b", 2)
    for name in ("1.png", "2.png", GROUND_TRUTH_FILE):
        digest_a = hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest()
        assert digest_a == hashlib.sha256((tmp_path / "b" / name).read_bytes()).hexdigest()


# --- scoring ------------------------------------------------------------------------------


def det(name: str, box: tuple[int, int, int, int], conf: float = 0.9) -> Detection:
    return Detection(0, *box, confidence=conf, class_name=name)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges share no area
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 10, 10), (2, 2, 2, 8), 0.0),  # empty box
        ((0, 0, 10, 10), (0, 0, 5, 10), 0.5),
    ],
)
def test_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_score_needs_the_same_class_and_iou_of_one_half() -> None:
    truth = {"1.png": [Region("table", (0, 0, 10, 10)), Region("figure", (50, 50, 60, 60))]}
    assert (
        score(truth, {"1.png": [det("table", (0, 0, 5, 10)), det("figure", (50, 50, 60, 60))]})
        == 1.0
    )
    assert (
        score(truth, {"1.png": [det("table", (0, 0, 4, 10)), det("figure", (50, 50, 60, 60))]})
        == 0.5
    )
    assert (
        score(truth, {"1.png": [det("text", (0, 0, 10, 10)), det("figure", (50, 50, 60, 60))]})
        == 0.5
    )


def test_each_detection_is_matched_once() -> None:
    twin = Region("text", (0, 0, 10, 10))
    assert score({"p": [twin, twin]}, {"p": [det("text", (0, 0, 10, 10))]}) == 0.5


def test_matching_is_greedy_by_iou() -> None:
    r1, r2 = Region("text", (0, 0, 10, 10)), Region("text", (0, 0, 10, 16))
    d1, d2 = det("text", (0, 0, 10, 11)), det("text", (0, 0, 10, 15))
    # IoU(r1,d1)=0.91 is the best pair, then IoU(r2,d2)=0.94 remains: both found.
    assert match_page([r1, r2], [d2, d1]) == [True, True]
    # Only d2 left: it matches r2 (0.94) rather than r1 (0.67), although r1 comes first.
    assert match_page([r1, r2], [d2]) == [False, True]


def test_pages_without_results_count_as_missed() -> None:
    truth = {"1.png": [Region("text", (0, 0, 10, 10))], "2.png": [Region("text", (0, 0, 10, 10))]}
    assert score(truth, {"1.png": [det("text", (0, 0, 10, 10))]}) == 0.5
    assert score(truth, {}) == 0.0
    assert score({}, {}) == 1.0
    assert score({"1.png": []}, {"1.png": [det("text", (0, 0, 1, 1))]}) == 1.0
