"""``rknn``: ``.rknn`` artefacts on a Rockchip NPU through RKNNLite, one runtime per NPU core
(devices.md §5.3). RKNNLite is imported when a session opens: a board imports only its own SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgesched.agent.backends.pooled import PooledBackend
from edgesched.agent.backends.sessions import (
    TensorInfo,
    VendorSession,
    check_layout,
    default_input_hw,
    import_vendor,
)
from edgesched.config import ArtefactSettings, TaskTypeSettings
from edgesched.errors import BackendError, ConfigError
from edgesched.inference.detectors import ModelSpec

#: RKNNLite's NPU_CORE_0, NPU_CORE_1, NPU_CORE_2: one runtime per core gives the throughput.
NPU_CORE_MASKS = (1, 2, 4)
RKNN_PACKAGE = (
    "rknn-toolkit-lite2 (the wheel for this Python from Rockchip's rknn-toolkit2 releases, "
    "with librknnrt.so in /usr/lib)"
)


class RknnSession(VendorSession):
    """One RKNNLite runtime on one NPU core (``core_mask`` None: the driver picks, as RK356x
    needs). Not for concurrent use: the backend hands each runtime to one thread at a time."""

    def __init__(
        self,
        path: str,
        input_hw: tuple[int, int],
        core_mask: int | None = None,
        input_layout: str = "nchw",
    ) -> None:
        api = import_vendor("rknnlite.api", RKNN_PACKAGE)
        self.core_mask = core_mask
        self._layout = check_layout(input_layout)
        self._inputs = [TensorInfo("input", [1, 3, input_hw[0], input_hw[1]])]
        self._outputs: list[TensorInfo] = []
        self._rknn: Any = api.RKNNLite()
        ret = self._rknn.load_rknn(path)
        if ret != 0:
            self.release()
            raise ConfigError(f"cannot load model {path}: RKNNLite.load_rknn returned {ret}")
        ret = (
            self._rknn.init_runtime()
            if core_mask is None
            else self._rknn.init_runtime(core_mask=core_mask)
        )
        if ret != 0:
            self.release()
            raise ConfigError(
                f"cannot start {path} on NPU core mask {core_mask}: "
                f"RKNNLite.init_runtime returned {ret}"
            )

    # RKNNLite cannot describe its outputs: get_outputs() is empty until the first run

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        outputs = self._rknn.inference(inputs=[self._feed(feeds)], data_format=[self._layout])
        if outputs is None:  # RKNNLite logs its error and returns None
            raise BackendError(f"RKNNLite.inference on core mask {self.core_mask} failed")
        result = [np.asarray(o) for o in outputs]
        if not self._outputs:
            self._outputs = [TensorInfo(f"output{i}", list(o.shape)) for i, o in enumerate(result)]
        return result

    def release(self) -> None:
        rknn, self._rknn = self._rknn, None
        if rknn is not None:
            rknn.release()


class RknnBackend(PooledBackend):
    """``.rknn`` artefacts on a Rockchip NPU: one RKNNLite runtime per core (masks 1, 2, 4).

    Owns its RKNNLite runtimes (through ``PooledBackend``); touches nothing of the agent's."""

    name: str = "rknn"
    formats: tuple[str, ...] = ("rknn",)

    def __init__(
        self,
        tasktypes: dict[str, TaskTypeSettings],
        threads: int = 1,
        target: str = "rk3588",
        core_masks: Sequence[int | None] = NPU_CORE_MASKS,
    ) -> None:
        # ``threads`` is the CPU backends' knob; the NPU's parallelism is its cores.
        self._core_masks = tuple(core_masks)
        super().__init__(tasktypes, target)

    def _instances(self) -> Sequence[int | None]:
        return self._core_masks

    def _open(self, spec: ModelSpec, artefact: ArtefactSettings, instance: Any) -> RknnSession:
        # RKNNLite cannot report its input shape: the decoder's default size for the kind.
        hw = spec.input_size or default_input_hw(spec.kind)
        return RknnSession(spec.path, hw, core_mask=instance, input_layout=artefact.input_layout)
