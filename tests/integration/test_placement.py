"""Model artefacts as placement constraints, in a mixed cluster: a board holding only an .rknn
artefact for task type A (fake RKNNLite) and a board with ONNX only."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
import pytest

from edgesched.config import ArtefactSettings, TaskTypeSettings
from edgesched.inference.model_files import sha256_file
from edgesched.tools.demo.pages import generate_page
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from tests.vendor_fakes import LAYOUT_NAMES, fake_artefact, install_fake, png


@pytest.fixture
def rknn_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_fake("rknnlite", tmp_path / "site", monkeypatch, "rknnlite.api")
    return fake_artefact(tmp_path, "rknn")


def task_types(rknn_file: Path) -> dict[str, TaskTypeSettings]:
    only_rknn = TaskTypeSettings(
        model="",  # no ONNX model for A: only the compiled artefact can run it
        class_names=list(LAYOUT_NAMES),
        artefacts=[ArtefactSettings("rknn", str(rknn_file), "rk3588", sha256_file(rknn_file))],
    )
    return {"A": only_rknn, "layout": TaskTypeSettings()}


async def test_type_a_goes_only_to_the_rknn_board_and_other_tasks_to_both(
    make_cluster, rknn_file: Path
) -> None:
    cluster: InProcessCluster = await make_cluster(strategy="roundrobin")
    cluster.settings.tasktypes = task_types(rknn_file)
    npu = await cluster.add_agent(
        "npu", device_type="rk3588", backend="rknn,sleep", tasktypes=task_types(rknn_file)
    )
    cpu = await cluster.add_agent("cpu", backend="sleep", tasktypes={"layout": TaskTypeSettings()})
    page = png(generate_page(1)[0])
    a_ids, other = [], []
    for i in range(12):  # interleaved, so both kinds are queued while both boards have room
        if i % 2 == 0:
            a_ids.append((await cluster.submit(f"a{i}", page, task_type="A")).task_id)
        other.append((await cluster.submit(f"l{i}", page)).task_id)
    results = await cluster.wait(a_ids + other, limit_s=120)
    a_devices = Counter(results[i].device_id for i in a_ids)
    other_devices = Counter(results[i].device_id for i in other)
    assert set(a_devices) == {npu.identity.agent_id}, a_devices
    assert set(other_devices) == {npu.identity.agent_id, cpu.identity.agent_id}, other_devices
    assert all(results[i].detections for i in a_ids)  # the fake NPU ran the real model
    devices = {d["id"]: d for d in (await cluster.get("/api/v1/devices")).json()["devices"]}
    assert devices[npu.identity.agent_id]["task_types"] == ["A", "layout"]
    assert devices[cpu.identity.agent_id]["task_types"] == ["layout"]


async def test_a_task_type_no_artefact_can_serve_is_refused_at_submission(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.settings.tasktypes = {"layout": TaskTypeSettings(), "empty": TaskTypeSettings(model="")}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.submit("k", png(generate_page(1)[0]), task_type="empty")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tasktypes.empty.model" in (caught.value.details() or "")


async def test_a_task_whose_capable_devices_are_offline_waits_says_so_then_dies(
    make_cluster, rknn_file: Path
) -> None:
    cluster: InProcessCluster = await make_cluster(no_device_ttl_s=1.5)
    cluster.settings.tasktypes = task_types(rknn_file)
    await cluster.add_agent("cpu", backend="sleep", tasktypes={"layout": TaskTypeSettings()})
    reply = await cluster.submit("k", png(generate_page(1)[0]), task_type="A")
    task = (await cluster.get(f"/api/v1/tasks/{reply.task_id}")).json()
    assert task["state"] == "queued"
    assert "no online device can run task type 'A'" in task["note"]
    result = (await cluster.wait([reply.task_id], limit_s=30))[reply.task_id]
    assert "no online device can run task type 'A'" in result.error
    await asyncio.sleep(0)
