"""YOLOv5 / YOLOv8 decoding on hand-built outputs, letterboxing, NMS and model specs.

No YOLO model is available offline, so the decoders (pure functions) are fed arrays built here,
and the detector wrapper runs against a stub session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from edgesched.errors import BackendError, ConfigError
from edgesched.inference.detectors import ModelSpec, class_names_from_metadata, load_detector
from edgesched.inference.geometry import DecodeMeta, InputTransform
from edgesched.inference.labels import Detection
from edgesched.inference.nms import batched_nms, box_iou, nms
from edgesched.inference.yolo import (
    YoloDetector,
    decode_yolov5,
    decode_yolov8,
    letterbox,
    preprocess_yolo,
)

NAMES = ("cat", "dog", "car")
IDENTITY = InputTransform(orig_width=640, orig_height=640, scale_x=1.0, scale_y=1.0)


def meta(transform: InputTransform = IDENTITY, names: tuple[str, ...] = NAMES) -> DecodeMeta:
    return DecodeMeta(transform=transform, class_names=names, score_threshold=0.5)


def v8_output(rows: list[tuple[float, float, float, float, list[float]]]) -> npt.NDArray[Any]:
    """[1, 4 + nc, N] from (cx, cy, w, h, class scores) rows."""
    cols = [[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows]
    return np.asarray(cols, dtype=np.float32).T[np.newaxis]


def v5_output(
    rows: list[tuple[float, float, float, float, float, list[float]]],
) -> npt.NDArray[Any]:
    """[1, N, 5 + nc] from (cx, cy, w, h, objectness, class scores) rows."""
    return np.asarray([[*r[:5], *r[5]] for r in rows], dtype=np.float32)[np.newaxis]


def boxes(dets: list[Detection]) -> list[tuple[str, int, int, int, int]]:
    return [(d.class_name, d.x1, d.y1, d.x2, d.y2) for d in dets]


# --- letterbox ---------------------------------------------------------------------------


def test_letterbox_keeps_aspect_and_centres_on_grey() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    canvas, transform = letterbox(image, (640, 640))
    assert canvas.size == (640, 640)
    assert (transform.scale_x, transform.scale_y) == (3.2, 3.2)
    assert (transform.pad_x, transform.pad_y) == (0.0, 160.0)
    assert canvas.getpixel((5, 5)) == (114, 114, 114)
    assert canvas.getpixel((5, 639)) == (114, 114, 114)
    assert canvas.getpixel((320, 320)) == (255, 0, 0)
    assert canvas.getpixel((320, 161)) == (255, 0, 0)


def test_letterbox_odd_pad_goes_right_and_bottom_like_ultralytics() -> None:
    _, transform = letterbox(Image.new("RGB", (100, 99)), (64, 64))
    # 99 * 0.64 = 63.36 -> 63 rows, one row of pad: none on top.
    assert transform.pad_y == 0.0


@pytest.mark.parametrize(("size", "target"), [((200, 100), (640, 640)), ((37, 211), (320, 480))])
def test_letterbox_round_trip(size: tuple[int, int], target: tuple[int, int]) -> None:
    _, transform = letterbox(Image.new("RGB", size), target)
    original = np.array([[0, 0, size[0], size[1]], [3.5, 7.25, 20.0, 30.0]])
    there = transform.to_input(original)
    assert there[0, 0] >= 0 and there[0, 2] <= target[1]
    np.testing.assert_allclose(transform.to_original(there), original, atol=1e-9)


def test_preprocess_is_rgb_unit_range_nchw() -> None:
    tensor, _ = preprocess_yolo(Image.new("RGB", (20, 10), (255, 0, 51)), (32, 32))
    assert tensor.shape == (1, 3, 32, 32)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, :, 16, 16], [1.0, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 0, 0], [114 / 255] * 3, atol=1e-6)  # pad


# --- YOLOv8 -------------------------------------------------------------------------------


def test_v8_threshold_nms_per_class_and_order() -> None:
    out = v8_output(
        [
            (100, 100, 40, 40, [0.9, 0.1, 0.0]),  # cat
            (102, 101, 40, 40, [0.8, 0.0, 0.0]),  # same cat, lower score: suppressed
            (101, 100, 40, 40, [0.0, 0.7, 0.0]),  # a dog on the same spot: other class, kept
            (300, 300, 20, 10, [0.0, 0.0, 0.95]),  # car
            (500, 500, 20, 20, [0.4, 0.3, 0.2]),  # nothing above 0.5
        ]
    )
    dets = decode_yolov8(out, meta())
    assert boxes(dets) == [
        ("car", 290, 295, 310, 305),
        ("cat", 80, 80, 120, 120),
        ("dog", 81, 80, 121, 120),
    ]
    assert [d.class_id for d in dets] == [2, 0, 1]
    assert dets[0].confidence == pytest.approx(0.95)


def test_v8_maps_back_through_the_letterbox_and_clips() -> None:
    image = Image.new("RGB", (200, 100))
    _, transform = letterbox(image, (640, 640))
    # Input box 64..192 x 192..320 -> original 20..60 x 10..50.
    # A box hanging over the image's right edge is clipped; one entirely in the pad is dropped.
    out = v8_output(
        [
            (128, 256, 128, 128, [0.9, 0, 0]),
            (630, 300, 40, 40, [0, 0.8, 0]),
            (320, 40, 60, 60, [0, 0, 0.9]),
        ]
    )
    dets = decode_yolov8(out, meta(transform))
    assert boxes(dets) == [("cat", 20, 10, 60, 50), ("dog", 191, 38, 200, 50)]


def test_v8_accepts_the_transposed_layout_when_classes_are_known() -> None:
    out = v8_output([(100, 100, 40, 40, [0.9, 0.1, 0.0])])
    assert decode_yolov8(out.transpose(0, 2, 1), meta()) == decode_yolov8(out, meta())


def test_v8_without_names_uses_the_output_width() -> None:
    dets = decode_yolov8(v8_output([(100, 100, 40, 40, [0.1, 0.2, 0.0, 0.0, 0.9])]), meta(names=()))
    assert [(d.class_id, d.class_name) for d in dets] == [(4, "")]


@pytest.mark.parametrize("shape", [(1, 10, 100), (2, 7, 100), (7,), (1, 4, 100)])
def test_v8_rejects_wrong_shapes(shape: tuple[int, ...]) -> None:
    names = NAMES if shape != (1, 4, 100) else ()
    with pytest.raises(BackendError):
        decode_yolov8(np.zeros(shape, dtype=np.float32), meta(names=names))


def test_v8_nothing_found() -> None:
    assert decode_yolov8(np.zeros((1, 7, 8400), dtype=np.float32), meta()) == []


# --- YOLOv5 -------------------------------------------------------------------------------


def test_v5_score_is_objectness_times_class() -> None:
    out = v5_output(
        [
            (100, 100, 40, 40, 0.9, [0.1, 0.6, 0.0]),  # 0.54: kept as dog
            (300, 300, 40, 40, 0.6, [0.7, 0.0, 0.0]),  # 0.42: dropped
            (400, 400, 40, 40, 0.4, [1.0, 0.0, 0.0]),  # objectness below threshold: dropped
            (500, 500, 40, 40, 1.0, [0.0, 0.0, 0.8]),  # 0.8 car
        ]
    )
    dets = decode_yolov5(out, meta())
    assert boxes(dets) == [("car", 480, 480, 520, 520), ("dog", 80, 80, 120, 120)]
    assert dets[1].confidence == pytest.approx(0.54)


def test_v5_nms_keeps_the_best_of_overlapping_boxes() -> None:
    out = v5_output(
        [
            (100, 100, 40, 40, 0.9, [0.7, 0, 0]),
            (101, 101, 40, 40, 0.95, [0.9, 0, 0]),
        ]
    )
    dets = decode_yolov5(out, meta())
    assert len(dets) == 1
    assert dets[0].x1 == 81
    assert dets[0].confidence == pytest.approx(0.855)


def test_v5_rejects_wrong_width() -> None:
    with pytest.raises(BackendError):
        decode_yolov5(np.zeros((1, 100, 7), dtype=np.float32), meta())


# --- NMS ----------------------------------------------------------------------------------


def test_box_iou_and_nms() -> None:
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(b[0], b[1:]), [1 / 3, 10 / 10.5, 0.0], atol=1e-6)
    assert nms(b, [0.9, 0.8, 0.7, 0.6], 0.5).tolist() == [0, 1, 3]
    assert nms(b, [0.9, 0.8, 0.7, 0.6], 0.3).tolist() == [0, 3]
    assert nms(b, [0.9, 0.8, 0.7, 0.6], 0.5, max_keep=2).tolist() == [0, 1]
    assert batched_nms(b, [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 1], 0.5).tolist() == [0, 1, 2, 3]
    assert batched_nms(np.zeros((0, 4)), [], [], 0.5).tolist() == []


# --- specs, metadata, wrapper -------------------------------------------------------------


def test_class_names_from_metadata() -> None:
    assert class_names_from_metadata("yolov8", {"names": "{0: 'person', 1: 'bus'}"}) == (
        "person",
        "bus",
    )
    assert class_names_from_metadata("yolov5", {"names": "['a', 'b']"}) == ("a", "b")
    assert class_names_from_metadata("yolov8", {}) == ()
    assert class_names_from_metadata("picodet_layout", {"character": "text\ntitle\n"}) == (
        "text",
        "title",
    )
    for bad in ("{0: 'a', 2: 'b'}", "{0: 'a', 'x': 'b'}", "__import__('os')", "42"):
        with pytest.raises(ConfigError):
            class_names_from_metadata("yolov8", {"names": bad})


def test_load_detector_refuses_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model kind"):
        load_detector(ModelSpec("ssd", str(tmp_path / "m.onnx")))
    with pytest.raises(ConfigError, match="does not exist"):
        load_detector(ModelSpec("yolov8", str(tmp_path / "m.onnx")))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="sha256"):
        load_detector(ModelSpec("yolov8", str(model), sha256="0" * 64))
    with pytest.raises(ConfigError, match="cannot load model"):
        load_detector(ModelSpec("yolov8", str(model)))
    with pytest.raises(ConfigError, match="threads"):
        load_detector(ModelSpec("yolov8", str(model)), threads=0)


class _Input:
    name = "images"
    shape = (1, 3, "height", "width")


class StubSession:
    """Answers like an Ultralytics export: one cat where the picture's red square is."""

    def __init__(self) -> None:
        self.fed: list[npt.NDArray[np.float32]] = []

    def get_inputs(self) -> list[_Input]:
        return [_Input()]

    def run(self, names: object, feeds: dict[str, npt.NDArray[np.float32]]) -> list[Any]:
        tensor = feeds["images"]
        self.fed.append(tensor)
        red = (tensor[0, 0] > 0.9) & (tensor[0, 1] < 0.1)
        ys, xs = np.nonzero(red)
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        return [v8_output([(cx, cy, w, h, [0.9, 0.0, 0.0])])]


def test_detector_runs_letterbox_session_and_decode_end_to_end() -> None:
    image = Image.new("RGB", (400, 200), "white")
    image.paste((255, 0, 0), (100, 50, 200, 150))
    session = StubSession()
    detector = YoloDetector(session, "yolov8", NAMES, input_hw=(320, 320))
    [found] = detector.detect(image)
    assert session.fed[0].shape == (1, 3, 320, 320)
    assert (found.class_name, found.x1, found.y1, found.x2, found.y2) == ("cat", 100, 50, 200, 150)
    assert detector.task_kind == "yolov8"
