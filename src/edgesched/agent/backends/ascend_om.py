"""``ascend_om``: Ascend ``.om`` artefacts through ais_bench's InferSession, one per NPU chip
(devices.md §5.4). ais_bench is imported when a session opens: a board imports only its own SDK.
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
    import_vendor,
)
from edgesched.config import ArtefactSettings, TaskTypeSettings
from edgesched.errors import ConfigError
from edgesched.inference.detectors import ModelSpec

AIS_BENCH_PACKAGE = (
    "the ais_bench and aclruntime wheels (Huawei's ais-bench tool), with the CANN environment "
    "sourced: source /usr/local/Ascend/ascend-toolkit/set_env.sh"
)


class AisBenchSession(VendorSession):
    """An Ascend ``.om`` model through ais_bench's InferSession on NPU ``device_id``."""

    def __init__(self, path: str, device_id: int = 0, input_layout: str = "nchw") -> None:
        interface = import_vendor("ais_bench.infer.interface", AIS_BENCH_PACKAGE)
        self._layout = check_layout(input_layout)
        try:
            self._session: Any = interface.InferSession(device_id, path)
        except Exception as exc:  # aclruntime raises plain RuntimeErrors and more
            raise ConfigError(f"cannot load model {path} on NPU {device_id}: {exc}") from None
        described = self._session.get_inputs()
        if len(described) != 1:
            raise ConfigError(f"{path} has {len(described)} inputs; the decoders feed one")
        shape = [int(d) for d in described[0].shape]
        if len(shape) != 4:
            raise ConfigError(f"{path} has input shape {shape}; expected 4 dimensions")
        if self._layout == "nhwc":
            shape = [shape[0], shape[3], shape[1], shape[2]]  # the decoders' NCHW view
        self._inputs = [TensorInfo(str(described[0].name), shape)]
        self._outputs = [
            TensorInfo(str(o.name), [int(d) for d in o.shape]) for o in self._session.get_outputs()
        ]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        outputs = self._session.infer(feeds=[self._feed(feeds)], mode="static")
        return [np.asarray(o) for o in outputs]

    def release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.free_resource()


class AscendOmBackend(PooledBackend):
    """Ascend ``.om`` artefacts through ais_bench: one InferSession per NPU chip.

    Owns its InferSessions (through ``PooledBackend``); touches nothing of the agent's."""

    name: str = "ascend_om"
    formats: tuple[str, ...] = ("om",)

    def __init__(
        self,
        tasktypes: dict[str, TaskTypeSettings],
        threads: int = 1,
        target: str = "",
        device_ids: Sequence[int] = (0,),
    ) -> None:
        self._device_ids = tuple(device_ids)
        super().__init__(tasktypes, target)

    def _instances(self) -> Sequence[int]:
        return self._device_ids

    def _open(self, spec: ModelSpec, artefact: ArtefactSettings, instance: Any) -> AisBenchSession:
        return AisBenchSession(
            spec.path, device_id=int(instance), input_layout=artefact.input_layout
        )
