"""Fakes of the vendor SDKs (rknn-toolkit-lite2, ais_bench), written as packages on disk.

They keep the SDKs' call shapes (devices.md §5.3, §5.4) but run the ``.rknn`` / ``.om`` file,
which in these tests is the ONNX layout model itself, through onnxruntime on the CPU, so the
decoders see real outputs. They record what the backend asked of them.
"""

from __future__ import annotations

import importlib
import io
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from edgesched.inference.model_files import bundled_layout_model

#: The bundled model's classes (its 'character' metadata), which compiled artefacts lack.
LAYOUT_NAMES = [
    "text",
    "title",
    "figure",
    "figure_caption",
    "table",
    "table_caption",
    "header",
    "footer",
    "reference",
    "equation",
]

_ORT_SESSION = """
import onnxruntime as _ort


def _session(path):
    opts = _ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return _ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
"""

RKNNLITE_API = _ORT_SESSION + textwrap.dedent(
    """
    import threading

    import numpy as np

    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
    NPU_CORE_0_1, NPU_CORE_0_1_2 = 3, 7
    RUNTIMES = []  # every RKNNLite made
    CALLS = []  # (core_mask, data_format, input shape) per inference
    BARRIER = None  # a test sets a threading.Barrier that every inference waits on
    LOAD_RESULT = 0
    _lock = threading.Lock()


    class RKNNLite:
        def __init__(self, verbose=False):
            self.core_mask = None
            self.released = False
            self._path = None
            self._session = None
            RUNTIMES.append(self)

        def load_rknn(self, path):
            self._path = path
            return LOAD_RESULT

        def init_runtime(self, core_mask=NPU_CORE_AUTO):
            self.core_mask = core_mask
            self._session = _session(self._path)
            return 0

        def inference(self, inputs, data_format=None):
            (x,) = inputs
            fmt = (data_format or ["nhwc"])[0]
            with _lock:
                CALLS.append((self.core_mask, fmt, tuple(x.shape)))
            if BARRIER is not None:
                BARRIER.wait(timeout=60)
            if fmt == "nhwc":
                x = x.transpose(0, 3, 1, 2)
            name = self._session.get_inputs()[0].name
            return self._session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})

        def release(self):
            self.released = True
            self._session = None
    """
)

AIS_BENCH_INTERFACE = _ORT_SESSION + textwrap.dedent(
    """
    import os

    SESSIONS = []
    CALLS = []  # (device_id, mode, input shape) per inference
    NHWC = False  # describe the input as NHWC, as an .om with AIPP would


    class _Desc:
        def __init__(self, name, shape):
            self.name = name
            self.shape = list(shape)


    class InferSession:
        def __init__(self, device_id, model_path, acl_json_path=None, debug=False, loop=1):
            if not os.path.exists(model_path):
                raise RuntimeError(f"model {model_path} does not exist")
            self.device_id = device_id
            self.freed = False
            self._session = _session(model_path)
            SESSIONS.append(self)

        def get_inputs(self):
            i = self._session.get_inputs()[0]
            n, c, h, w = i.shape
            return [_Desc(i.name, [n, h, w, c] if NHWC else [n, c, h, w])]

        def get_outputs(self):
            return [_Desc(o.name, o.shape) for o in self._session.get_outputs()]

        def infer(self, feeds, mode="static"):
            (x,) = feeds
            CALLS.append((self.device_id, mode, tuple(x.shape)))
            if NHWC:
                x = x.transpose(0, 3, 1, 2)
            name = self._session.get_inputs()[0].name
            return self._session.run(None, {name: x})

        def free_resource(self):
            self.freed = True
    """
)

PACKAGES = {
    "rknnlite": {"rknnlite/__init__.py": "", "rknnlite/api.py": RKNNLITE_API},
    "ais_bench": {
        "ais_bench/__init__.py": "",
        "ais_bench/infer/__init__.py": "",
        "ais_bench/infer/interface.py": AIS_BENCH_INTERFACE,
    },
}


def install_fake(top: str, root: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> ModuleType:
    """Write the fake package ``top`` under ``root``, put it on sys.path; return ``module``.

    Its modules leave sys.modules again when the test ends, so every test gets a fresh copy.
    """
    for relpath, source in PACKAGES[top].items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    for relpath in PACKAGES[top]:
        name = relpath[: -len(".py")].replace("/", ".").replace(".__init__", "")
        # setitem over an absent key is undone by removing it: the test's imports go away
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(root))
    return importlib.import_module(module)


def fake_artefact(directory: Path, suffix: str) -> Path:
    """A "compiled" artefact: the ONNX layout model under another name."""
    path = directory / f"layout.{suffix}"
    path.write_bytes(bundled_layout_model().read_bytes())
    return path


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
