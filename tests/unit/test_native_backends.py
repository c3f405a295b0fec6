"""RKNNLite and ais_bench backends, run against fake SDK packages that execute the real model."""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from edgesched.agent.backends.ascend_om import AscendOmBackend
from edgesched.agent.backends.base import HeldArtefact
from edgesched.agent.backends.onnx import OnnxBackend
from edgesched.agent.backends.rknn import RknnBackend
from edgesched.config import ArtefactSettings, TaskTypeSettings
from edgesched.errors import BadInputError, ConfigError, UnknownTaskTypeError
from edgesched.inference.model_files import sha256_file
from edgesched.tools.demo.pages import generate_page
from tests.vendor_fakes import LAYOUT_NAMES, fake_artefact, install_fake, png


@pytest.fixture(scope="module")
def page() -> bytes:
    return png(generate_page(1)[0])


@pytest.fixture(scope="module")
def onnx_label(page: bytes) -> str:
    label = OnnxBackend({"layout": TaskTypeSettings()}).run("layout", page).label
    assert label  # the page has regions the model finds
    return label


def layout(*artefacts: ArtefactSettings, names: bool = True) -> dict[str, TaskTypeSettings]:
    tt = TaskTypeSettings(class_names=list(LAYOUT_NAMES) if names else [], artefacts=[*artefacts])
    return {"layout": tt}


def served(backend: RknnBackend | AscendOmBackend) -> list[str]:
    backend.warm()
    return [a.task_type for a in backend.artefacts()]


@pytest.fixture
def rknn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return install_fake("rknnlite", tmp_path / "site", monkeypatch, "rknnlite.api")


@pytest.fixture
def ais(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return install_fake("ais_bench", tmp_path / "site", monkeypatch, "ais_bench.infer.interface")


# --- RKNNLite -------------------------------------------------------------------------------


def test_one_runtime_per_core_and_the_onnx_result(
    rknn: ModuleType, tmp_path: Path, page: bytes, onnx_label: str
) -> None:
    file = fake_artefact(tmp_path, "rknn")
    sha = sha256_file(file)
    backend = RknnBackend(layout(ArtefactSettings("rknn", str(file), "rk3588", sha)))
    assert backend.artefacts() == []  # nothing runs before warm()
    backend.warm()
    assert backend.artefacts() == [HeldArtefact("layout", "rknn", "rk3588", sha, "rknn")]
    assert sorted(r.core_mask for r in rknn.RUNTIMES) == [1, 2, 4]
    result = backend.run("layout", page)
    assert result.label == onnx_label
    assert result.detections[0].class_name in LAYOUT_NAMES
    assert [(rknn.CALLS[0][0], "nchw", (1, 3, 800, 608))] == rknn.CALLS
    backend.close()
    assert all(r.released for r in rknn.RUNTIMES)


def test_concurrent_runs_go_to_different_cores(
    rknn: ModuleType,
    tmp_path: Path,
    page: bytes,
    onnx_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = RknnBackend(layout(ArtefactSettings("rknn", str(fake_artefact(tmp_path, "rknn")))))
    backend.warm()
    # Each inference waits until three are in flight: this passes only if the three runtimes
    # really run at once, and a runtime shared by two threads would show a repeated mask.
    monkeypatch.setattr(rknn, "BARRIER", threading.Barrier(3))
    with ThreadPoolExecutor(3) as pool:
        labels = list(pool.map(lambda _: backend.run("layout", page).label, range(3)))
    assert labels == [onnx_label] * 3
    assert sorted(mask for mask, _, _ in rknn.CALLS) == [1, 2, 4]


def test_nhwc_artefact_gets_a_transposed_input(
    rknn: ModuleType, tmp_path: Path, page: bytes, onnx_label: str
) -> None:
    file = fake_artefact(tmp_path, "rknn")
    artefact = ArtefactSettings("rknn", str(file), input_layout="nhwc")
    assert RknnBackend(layout(artefact)).run("layout", page).label == onnx_label
    assert rknn.CALLS[0][1:] == ("nhwc", (1, 800, 608, 3))


def test_only_present_intact_artefacts_for_this_chip_are_advertised(
    rknn: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = str(fake_artefact(tmp_path, "rknn"))
    assert served(RknnBackend(layout(ArtefactSettings("rknn", str(tmp_path / "no.rknn"))))) == []
    assert served(RknnBackend(layout(ArtefactSettings("rknn", file, "rk3566")))) == []
    assert served(RknnBackend(layout(ArtefactSettings("onnx", file)))) == []
    with caplog.at_level(logging.WARNING):
        assert served(RknnBackend(layout(ArtefactSettings("rknn", file, "", "0" * 64)))) == []
    assert "damaged or a different version" in caplog.text
    assert not rknn.RUNTIMES  # none of those was opened
    # The first usable one wins.
    two = layout(ArtefactSettings("rknn", file, "rk3566"), ArtefactSettings("rknn", file, "RK3588"))
    backend = RknnBackend(two)
    backend.warm()
    assert backend.artefacts() == [HeldArtefact("layout", "rknn", "RK3588", "", "rknn")]


def test_bad_pictures_and_unknown_task_types(rknn: ModuleType, tmp_path: Path) -> None:
    backend = RknnBackend(layout(ArtefactSettings("rknn", str(fake_artefact(tmp_path, "rknn")))))
    with pytest.raises(BadInputError, match="not a recognised image"):
        backend.run("layout", b"not a picture")
    with pytest.raises(UnknownTaskTypeError):
        backend.run("faces", b"")


def test_a_runtime_that_fails_to_load_releases_the_others(
    rknn: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = RknnBackend(layout(ArtefactSettings("rknn", str(fake_artefact(tmp_path, "rknn")))))
    monkeypatch.setattr(rknn, "LOAD_RESULT", -1)
    # Like OnnxBackend, a model that cannot load is left out, and the board serves the rest.
    assert served(backend) == []
    assert "load_rknn returned -1" in caplog.text
    assert rknn.RUNTIMES and all(r.released for r in rknn.RUNTIMES)
    with pytest.raises(UnknownTaskTypeError):
        backend.run("layout", b"")


def test_layout_artefact_needs_class_names(
    rknn: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artefact = ArtefactSettings("rknn", str(fake_artefact(tmp_path, "rknn")))
    assert served(RknnBackend(layout(artefact, names=False))) == []
    assert "set class_names" in caplog.text


def test_missing_rknnlite_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "rknnlite", None)  # import rknnlite now raises ImportError
    backend = RknnBackend(layout(ArtefactSettings("rknn", str(fake_artefact(tmp_path, "rknn")))))
    with pytest.raises(ConfigError, match="install rknn-toolkit-lite2"):
        backend.run("layout", png(generate_page(2, 200, 300)[0]))  # opened on first use
    assert served(backend) == []
    assert "install rknn-toolkit-lite2" in caplog.text


# --- ais_bench ------------------------------------------------------------------------------


def test_om_through_ais_bench(
    ais: ModuleType, tmp_path: Path, page: bytes, onnx_label: str
) -> None:
    file = fake_artefact(tmp_path, "om")
    backend = AscendOmBackend(
        layout(ArtefactSettings("om", str(file), "Ascend310B4")), device_ids=(0, 1)
    )
    backend.warm()
    assert backend.artefacts() == [HeldArtefact("layout", "om", "Ascend310B4", "", "ascend_om")]
    assert [s.device_id for s in ais.SESSIONS] == [0, 1]
    assert backend.run("layout", page).label == onnx_label
    assert ais.CALLS[0][1:] == ("static", (1, 3, 800, 608))
    with pytest.raises(BadInputError):
        backend.run("layout", b"\x89PNG\r\n\x1a\n")
    backend.close()
    assert all(s.freed for s in ais.SESSIONS)


def test_om_with_nhwc_input(
    ais: ModuleType,
    tmp_path: Path,
    page: bytes,
    onnx_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ais, "NHWC", True)
    file = fake_artefact(tmp_path, "om")
    backend = AscendOmBackend(layout(ArtefactSettings("om", str(file), input_layout="nhwc")))
    assert backend.run("layout", page).label == onnx_label
    assert ais.CALLS[0][2] == (1, 800, 608, 3)


def test_om_target_filter(ais: ModuleType, tmp_path: Path) -> None:
    file = str(fake_artefact(tmp_path, "om"))
    tasktypes = layout(ArtefactSettings("om", file, "Ascend310P3"))
    assert served(AscendOmBackend(tasktypes, target="Ascend310B4")) == []
    assert served(AscendOmBackend(tasktypes)) == ["layout"]


def test_missing_ais_bench_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ais_bench", None)
    backend = AscendOmBackend(layout(ArtefactSettings("om", str(fake_artefact(tmp_path, "om")))))
    assert served(backend) == []
    assert "ais_bench and aclruntime" in caplog.text
