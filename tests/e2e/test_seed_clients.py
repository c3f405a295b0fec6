"""Seed clients, unchanged, against edgesched: combined master and the split layout.

The client and the receiver here are independent peers (tests/seedpeers.py), not edgesched code.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from edgesched.inference.labels import parse_label
from edgesched.tools.demo.pages import write_pages
from edgesched.tools.testing.process_cluster import LocalCluster
from tests.seedpeers import Receiver, upload_image, upload_images, upload_message


@pytest.fixture
def receiver(tmp_path: Path):
    made = Receiver(tmp_path / "rst")
    yield made
    made.close()


def start(cluster: LocalCluster, layout: str, receiver: Receiver) -> str:
    """Starts the layout; returns the address seed clients send to."""
    args = ["--result-port", str(receiver.port)]
    cluster.extra_master_args = args
    if layout == "combined":
        cluster.start_master()
        target = cluster.grpc_target
    else:
        cluster.start_master(command="gateway")
        target = f"127.0.0.1:{cluster.start_task_manager()}"
    cluster.start_agent("agent", ["--backend", "onnx", "--slots", "2"])
    cluster.wait_for_devices(1)
    return target


def wait_for_files(receiver: Receiver, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(set(receiver.received)) < count and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("layout", ["combined", "split"])
def test_a_seed_client_gets_one_label_file_per_picture_unary_and_streamed(
    layout: str, cluster: LocalCluster, receiver: Receiver, tmp_path: Path
) -> None:
    target = start(cluster, layout, receiver)
    pages = tmp_path / "req"
    write_pages(pages, 4, seed=3)
    unary = [
        upload_image(target, upload_message(f"{i}.png", (pages / f"{i}.png").read_bytes()))
        for i in (1, 2)
    ]
    assert [r["filename"] for r in unary] == ["127.0.0.1_1.png", "127.0.0.1_2.png"]
    assert all(r["saved_path"].endswith(f"127.0.0.1/{r['filename']}") for r in unary)
    streamed = upload_images(
        target,
        [upload_message(f"{i}.png", (pages / f"{i}.png").read_bytes()) for i in (3, 4)],
    )
    assert streamed["saved_count"] == 2 and streamed["req_id"].startswith("127.0.0.1_")
    wait_for_files(receiver, 4)
    names = sorted(set(receiver.received))
    assert names == [f"127.0.0.1_{n}.txt" for n in (1, 2, 3, 4)]
    for name in names:
        detections = parse_label((receiver.directory / name).read_text())
        assert detections, f"{name} is empty"
        assert [d.confidence for d in detections] == sorted(d.confidence for d in detections)


@pytest.mark.parametrize("layout", ["combined", "split"])
def test_a_seed_client_with_an_unmapped_task_type_is_refused_and_nothing_is_queued(
    layout: str, cluster: LocalCluster, receiver: Receiver, tmp_path: Path
) -> None:
    target = start(cluster, layout, receiver)
    write_pages(tmp_path / "req", 1)
    picture = (tmp_path / "req" / "1.png").read_bytes()
    with pytest.raises(grpc.RpcError) as caught:
        upload_image(target, upload_message("1.png", picture, tasktype="Darknet"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tasktypes.Darknet" in caught.value.details()
    import httpx

    tasks = httpx.get(f"{cluster.http_url}/api/v1/tasks", timeout=5).json()["tasks"]
    assert tasks == []
