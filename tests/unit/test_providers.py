"""Execution providers per board, and the fallback when a listed provider fails to load."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from edgesched.agent.backends.ascend_om import AscendOmBackend
from edgesched.agent.backends.base import Backend
from edgesched.agent.backends.filedrop import FileDropBackend
from edgesched.agent.backends.onnx import OnnxBackend
from edgesched.agent.backends.onnx_ep import (
    OrtAcceleratedBackend,
    open_session,
    provider_options,
    providers_for,
)
from edgesched.agent.backends.rknn import RknnBackend
from edgesched.config import TaskTypeSettings
from edgesched.errors import BadInputError, ConfigError, UnknownTaskTypeError
from edgesched.inference.model_files import bundled_layout_model
from edgesched.tools.demo.pages import generate_page
from tests.vendor_fakes import png

TRT, CUDA, CANN, CPU = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CANNExecutionProvider",
    "CPUExecutionProvider",
)
EVERYTHING = [TRT, CUDA, CANN, "AzureExecutionProvider", CPU]


@pytest.mark.parametrize(
    ("device_type", "expected"),
    [
        ("atlas310", [CANN, CPU]),
        ("ascend", [CANN, CPU]),
        ("ATLAS_I", [CANN, CPU]),
        ("orin", [TRT, CUDA, CPU]),
        ("jetson", [TRT, CUDA, CPU]),
        ("nvidia", [TRT, CUDA, CPU]),
        ("rk3588", [CPU]),
        ("cpu", [CPU]),
        ("something-else", [CPU]),
    ],
)
def test_preference_per_board(device_type: str, expected: list[str]) -> None:
    assert providers_for(device_type, EVERYTHING) == expected


def test_only_what_onnxruntime_has_and_always_the_cpu() -> None:
    assert providers_for("orin", [CUDA, CPU]) == [CUDA, CPU]
    assert providers_for("atlas310", [TRT, CUDA, CPU]) == [CPU]
    assert providers_for("nvidia", [TRT]) == [TRT, CPU]


def test_options(tmp_path: Path) -> None:
    trt = provider_options(TRT, "orin", tmp_path)
    assert trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt" / "orin")
    assert (tmp_path / "tensorrt" / "orin").is_dir()
    assert provider_options(CANN, "atlas310", tmp_path) == {"device_id": 0}
    assert provider_options(CPU, "cpu", tmp_path) == {}


class FakeOrt:
    """What open_session uses of onnxruntime; sessions with a failing first provider raise."""

    def __init__(self, available: list[str], failing: set[str]) -> None:
        self.available = available
        self.failing = failing
        self.attempts: list[list[tuple[str, dict[str, Any]]]] = []

    def module(self) -> types.ModuleType:
        fake = self

        class SessionOptions:
            intra_op_num_threads = 0
            inter_op_num_threads = 0

        class InferenceSession:
            def __init__(self, path: str, sess_options: Any, providers: Any) -> None:
                fake.attempts.append(list(providers))
                if providers[0][0] in fake.failing:
                    raise RuntimeError(f"{providers[0][0]}: libnvinfer.so.10 not found")
                self.path = path
                self.threads = sess_options.intra_op_num_threads
                self.providers = [name for name, _ in providers]

            def get_providers(self) -> list[str]:
                return self.providers

        module = types.ModuleType("onnxruntime")
        module.get_available_providers = lambda: list(fake.available)  # type: ignore[attr-defined]
        module.SessionOptions = SessionOptions  # type: ignore[attr-defined]
        module.InferenceSession = InferenceSession  # type: ignore[attr-defined]
        return module


def test_falls_back_past_providers_that_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeOrt([TRT, CUDA, CPU], failing={TRT})
    monkeypatch.setitem(sys.modules, "onnxruntime", fake.module())
    with caplog.at_level(logging.INFO, logger="edgesched.agent.backends.onnx_ep"):
        session, used = open_session("m.onnx", 2, "orin", tmp_path)
    assert used == CUDA
    assert session.threads == 2
    assert [[name for name, _ in attempt] for attempt in fake.attempts] == [
        [TRT, CUDA, CPU],
        [CUDA, CPU],
    ]
    assert fake.attempts[0][0][1]["trt_engine_cache_enable"] is True
    assert "TensorrtExecutionProvider failed" in caplog.text
    assert "runs on CUDAExecutionProvider" in caplog.text


def test_down_to_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeOrt([CANN, CPU], failing={CANN})
    monkeypatch.setitem(sys.modules, "onnxruntime", fake.module())
    assert open_session("m.onnx", 1, "atlas310", tmp_path)[1] == CPU
    assert fake.attempts[0] == [(CANN, {"device_id": 0}), (CPU, {})]


def test_every_provider_failing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeOrt([CUDA, CPU], failing={CUDA, CPU})
    monkeypatch.setitem(sys.modules, "onnxruntime", fake.module())
    with pytest.raises(ConfigError, match=r"cannot load model m\.onnx"):
        open_session("m.onnx", 1, "nvidia", tmp_path)


def test_missing_onnxruntime_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        open_session("m.onnx", 1, "cpu", tmp_path)


def test_real_cpu_session_on_the_bundled_model(tmp_path: Path) -> None:
    session, used = open_session(bundled_layout_model(), 1, "orin", tmp_path)
    assert used == CPU  # this machine's onnxruntime has no GPU provider
    assert session.get_inputs()[0].shape[1] == 3


def test_accelerated_backend_matches_the_cpu_backend(tmp_path: Path) -> None:
    tasktypes = {"layout": TaskTypeSettings()}
    backend = OrtAcceleratedBackend(tasktypes, 1, device_type="orin", cache_dir=tmp_path)
    backend.warm()
    assert backend.provider_used == {"layout": CPU}
    assert [a.task_type for a in backend.artefacts()] == ["layout"]
    page = png(generate_page(1)[0])
    result = backend.run("layout", page)
    assert result.detections
    assert result.label == OnnxBackend(tasktypes).run("layout", page).label
    with pytest.raises(BadInputError):
        backend.run("layout", b"not a picture")
    with pytest.raises(UnknownTaskTypeError):
        backend.run("nope", page)


def test_no_accelerator_and_no_cpu_fallback_is_not_served(tmp_path: Path) -> None:
    tasktypes = {"layout": TaskTypeSettings(cpu_fallback=False)}
    backend = OrtAcceleratedBackend(tasktypes, 1, device_type="orin", cache_dir=tmp_path)
    backend.warm()  # only the CPU provider here: the task type may not run on it
    assert backend.artefacts() == []


def test_every_backend_fits_the_protocol(tmp_path: Path) -> None:
    # Checked by mypy as much as at run time: each must be usable where a Backend is.
    backends: list[Backend] = [
        OrtAcceleratedBackend({}, 1),
        RknnBackend({}),
        AscendOmBackend({}),
        FileDropBackend(["layout"], tmp_path / "in", tmp_path / "out"),
    ]
    assert [b.name for b in backends] == ["onnx_ep", "rknn", "ascend_om", "filedrop"]
