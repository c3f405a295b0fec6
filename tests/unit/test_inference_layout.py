"""The bundled PicoDet layout model: file checks, pure decoding, and real detections on pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from edgesched.errors import BackendError, ConfigError
from edgesched.inference.detectors import Detector, ModelSpec, load_detector
from edgesched.inference.geometry import DecodeMeta, InputTransform
from edgesched.inference.layout import decode_picodet, preprocess_picodet
from edgesched.inference.model_files import (
    LAYOUT_SHA256,
    bundled_layout_model,
    locate_bundled_model,
    sha256_file,
    verify_sha256,
)
from edgesched.tools.demo.pages import generate_page, page_seed
from edgesched.tools.demo.scoring import match_page

LAYOUT_NAMES = ("text", "title", "figure", "figure_caption", "table", "table_caption")
GRIDS = ((100, 76), (50, 38), (25, 19), (13, 10))  # 800×608 at strides 8, 16, 32, 64


@pytest.fixture(scope="module")
def layout_detector() -> Detector:
    return load_detector(ModelSpec("picodet_layout", str(bundled_layout_model())), threads=1)


# --- model file ---------------------------------------------------------------------------


def test_bundled_model_is_located_and_verified() -> None:
    path = bundled_layout_model()
    assert path.name == "layout_cdla.onnx"
    assert sha256_file(path) == LAYOUT_SHA256
    assert bundled_layout_model() is path  # cached: hashed once per process


def test_missing_package_names_the_pip_command() -> None:
    with pytest.raises(ConfigError, match="pip install --no-deps edgesched-no-such-dist"):
        locate_bundled_model("edgesched-no-such-dist", "x.onnx")


def test_missing_file_in_installed_package() -> None:
    with pytest.raises(ConfigError, match=r"has no nope/model\.onnx"):
        locate_bundled_model("numpy", "nope/model.onnx")


def test_sha256_mismatch(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"abc")
    verify_sha256(model, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD")
    with pytest.raises(ConfigError, match="damaged or a different version"):
        verify_sha256(model, LAYOUT_SHA256)
    with pytest.raises(ConfigError, match="cannot read"):
        verify_sha256(tmp_path / "missing.onnx", LAYOUT_SHA256)


# --- pure pre- and post-processing --------------------------------------------------------


def test_preprocess_stretches_and_normalises_in_bgr_order() -> None:
    tensor, transform = preprocess_picodet(Image.new("RGB", (1216, 1600), (255, 0, 0)))
    assert tensor.shape == (1, 3, 800, 608)
    assert tensor.dtype == np.float32
    assert (transform.scale_x, transform.scale_y) == (0.5, 0.5)
    # Channel 0 is blue (0 here) with mean[0] / std[0]; channel 2 is red (255).
    np.testing.assert_allclose(tensor[0, 0, 10, 10], (0 - 0.485) / 0.229, rtol=1e-5)
    np.testing.assert_allclose(tensor[0, 2, 10, 10], (1 - 0.406) / 0.225, rtol=1e-5)


def empty_outputs(nc: int = len(LAYOUT_NAMES)) -> list[npt.NDArray[Any]]:
    scores = [np.zeros((1, h * w, nc), dtype=np.float32) for h, w in GRIDS]
    dists = [np.zeros((1, h * w, 32), dtype=np.float32) for h, w in GRIDS]
    return scores + dists


def put(
    outputs: list[npt.NDArray[Any]],
    level: int,
    row: int,
    col: int,
    cls: int,
    score: float,
    bin_: int,
) -> None:
    """One anchor whose four side distributions all peak hard at ``bin_``."""
    index = row * GRIDS[level][1] + col
    outputs[level][0, index, cls] = score
    logits = np.full((4, 8), -50.0, dtype=np.float32)
    logits[:, bin_] = 50.0
    outputs[4 + level][0, index] = logits.reshape(-1)


def layout_meta(width: int = 1216, height: int = 1600) -> DecodeMeta:
    transform = InputTransform(width, height, scale_x=608 / width, scale_y=800 / height)
    return DecodeMeta(transform=transform, class_names=LAYOUT_NAMES, score_threshold=0.5)


def test_decode_centre_plus_expected_distance_scaled_back() -> None:
    outputs = empty_outputs()
    put(outputs, level=0, row=10, col=20, cls=4, score=0.9, bin_=3)  # stride 8: ±24 px
    put(outputs, level=3, row=2, col=5, cls=2, score=0.8, bin_=1)  # stride 64: ±64 px
    put(outputs, level=1, row=30, col=30, cls=0, score=0.45, bin_=2)  # below the threshold
    dets = decode_picodet(outputs, layout_meta())
    # Centres (164, 84) and (352, 160) in input pixels; the page is twice the input size.
    assert [(d.class_name, d.x1, d.y1, d.x2, d.y2) for d in dets] == [
        ("table", 280, 120, 376, 216),
        ("figure", 576, 192, 832, 448),
    ]
    assert dets[0].confidence == pytest.approx(0.9)


def test_decode_nms_is_per_class_and_anchor_can_give_two_classes() -> None:
    outputs = empty_outputs()
    put(outputs, 0, 10, 20, cls=0, score=0.9, bin_=3)
    put(outputs, 0, 10, 21, cls=0, score=0.7, bin_=3)  # same class, IoU 0.71: suppressed
    outputs[0][0, 10 * 76 + 20, 1] = 0.6  # the first anchor is also a title
    dets = decode_picodet(outputs, layout_meta())
    assert [(d.class_name, round(d.confidence, 2)) for d in dets] == [("text", 0.9), ("title", 0.6)]


def test_decode_top_k_per_level() -> None:
    outputs = empty_outputs()
    for col in range(0, 70, 10):
        put(outputs, 0, 50, col, cls=0, score=0.6 + col / 1000, bin_=1)
    assert len(decode_picodet(outputs, layout_meta(), top_k=3)) == 3
    assert len(decode_picodet(outputs, layout_meta())) == 7


def test_decode_rejects_unexpected_outputs() -> None:
    with pytest.raises(BackendError):
        decode_picodet(empty_outputs()[:3], layout_meta())
    bad = empty_outputs()
    bad[0] = np.zeros((1, 7601, 6), dtype=np.float32)
    with pytest.raises(BackendError):
        decode_picodet(bad, layout_meta())


# --- the real model -----------------------------------------------------------------------


def test_session_uses_the_threads_asked_for(layout_detector: Detector) -> None:
    options = getattr(layout_detector, "_session").get_session_options()  # noqa: B009
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert layout_detector.task_kind == "picodet_layout"
    assert layout_detector.class_names[:3] == ("text", "title", "figure")
    assert len(layout_detector.class_names) == 10


@pytest.mark.parametrize("index", [1, 2, 3])
def test_real_model_finds_the_drawn_regions(layout_detector: Detector, index: int) -> None:
    image, regions = generate_page(page_seed(0, index))
    dets = layout_detector.detect(image)
    found = match_page(regions, dets)
    missed = [r for r, ok in zip(regions, found, strict=True) if not ok]
    # These pages are all found today; allow one miss so a different CPU's rounding cannot
    # turn a borderline caption into a failure.
    assert len(missed) <= 1, missed
    found_classes = {r.class_name for r, ok in zip(regions, found, strict=True) if ok}
    assert {"text", "title", "header", "footer"} <= found_classes
    for d in dets:
        assert 0 <= d.x1 < d.x2 <= image.width and 0 <= d.y1 < d.y2 <= image.height


def test_real_model_on_a_blank_page_finds_nothing(layout_detector: Detector) -> None:
    assert layout_detector.detect(Image.new("RGB", (620, 877), "white")) == []
