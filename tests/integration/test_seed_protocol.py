"""Golden tests: every reply body and status code of the seed's protocols, as edgesched serves
them. Peers are independent (tests/seedpeers.py), not edgesched's own client code."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import grpc
import httpx
import pytest

from edgesched.client.compat.receiver import ReceiverServer
from edgesched.client.compat.sender import send_legacy
from edgesched.tools.testing.pictures import png_bytes
from tests.seedpeers import Receiver, upload_message

VALID = "valid values: load, 负载贪心, roundrobin, round_robin"


async def raw_unary(cluster, body: bytes) -> bytes:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.server.grpc_port}") as channel:
        reply: bytes = await channel.unary_unary("/ImageUpload/UploadImage")(body, timeout=10)
        return reply


async def raw_stream(cluster, bodies: list[bytes]) -> bytes:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.server.grpc_port}") as channel:
        reply: bytes = await channel.stream_unary("/ImageUpload/UploadImages")(
            iter(bodies), timeout=10
        )
        return reply


async def post_schedule(cluster, query: str, body: object) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(f"{cluster.http}/schedule{query}", content=raw, timeout=10)


def upload_file(cluster, ip: str, name: str, data: bytes) -> Path:
    path = Path(cluster.settings.master.data_dir) / "upload" / ip / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_upload_image_saves_under_the_seed_name_and_answers_filename_and_path(
    make_cluster,
) -> None:
    cluster = await make_cluster()
    reply = json.loads(await raw_unary(cluster, upload_message("photo.JPG", png_bytes())))
    assert reply["filename"] == "127.0.0.1_1.jpg"
    # relative to the upload folder: the reply names no absolute path of the server
    assert reply["saved_path"] == "127.0.0.1/127.0.0.1_1.jpg"
    upload = Path(cluster.settings.master.data_dir) / "upload"
    assert (upload / reply["saved_path"]).read_bytes() == png_bytes()
    second = json.loads(await raw_unary(cluster, upload_message("x", png_bytes())))
    assert second["filename"] == "127.0.0.1_2"
    (task,) = [
        t for t in cluster.master.rows.values() if t.metadata["seed_file"].endswith("_1.jpg")
    ]
    assert task.origin == "seed" and task.client_addr == "127.0.0.1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid json"),
        (b'"a string"', "invalid json: expected an object"),
        (json.dumps({"filename": "a.png"}).encode(), "missing content_b64"),
        (json.dumps({"filename": "a.png", "content_b64": "@@@"}).encode(), "invalid base64"),
        (upload_message("a.png", b"not a picture at all"), "not a recognised image"),
        (upload_message("a.png", png_bytes(), tasktype="Darknet"), "tasktypes.Darknet"),
    ],
)
async def test_upload_image_errors_are_invalid_argument_with_the_reason(
    make_cluster, body: bytes, reason: str
) -> None:
    cluster = await make_cluster()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_unary(cluster, body)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (caught.value.details() or "")
    assert await cluster.master.journal.counts() == {}


async def test_the_seeds_task_type_names_run_as_their_default_mapping(make_cluster) -> None:
    cluster = await make_cluster()
    picture = base64.b64encode(png_bytes()).decode()
    no_type = json.dumps({"filename": "a.png", "content_b64": picture}).encode()  # Gen-A: "yolo"
    await raw_unary(cluster, no_type)
    await raw_unary(cluster, upload_message("b.png", png_bytes(), tasktype="YoloV5"))
    rows = sorted(cluster.master.rows.values(), key=lambda r: r.metadata["seed_file"])
    assert [(r.task_type, r.metadata["service"]) for r in rows] == [
        ("layout", "yolo"),
        ("layout", "YoloV5"),
    ]


async def test_upload_images_answers_saved_count_and_names_a_bad_message(make_cluster) -> None:
    cluster = await make_cluster()
    good = [upload_message(f"{i}.png", png_bytes()) for i in range(3)]
    reply = json.loads(await raw_stream(cluster, good))
    assert reply["saved_count"] == 3 and reply["req_id"].startswith("127.0.0.1_")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_stream(cluster, [good[0], b"{broken", good[1]])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("2 of 3 saved; message 2: invalid json")
    assert sum((await cluster.master.journal.counts()).values()) == 5


@pytest.mark.parametrize(
    ("query", "body", "status", "reply"),
    [
        (
            "?stargety=bogus",
            {},
            400,
            {"status": "error", "msg": f"invalid stargety parameter 'bogus'; {VALID}"},
        ),
        (
            "?strategy=bogus",
            {},
            400,
            {"status": "error", "msg": f"invalid stargety parameter 'bogus'; {VALID}"},
        ),
        ("", b"{nope", 400, {"status": "error", "msg": "invalid json"}),
        (
            "",
            {"tasktype": "layout", "filename": "a.png"},
            400,
            {"status": "error", "msg": "missing required fields"},
        ),
        (
            "",
            {"ip": "10.0.0.9", "filename": "a.png"},
            400,
            {"status": "error", "msg": "missing required fields"},
        ),
        (
            "",
            {"ip": "10.0.0.9", "tasktype": "layout"},
            400,
            {"status": "error", "msg": "missing filename(s)"},
        ),
        (
            "",
            {"ip": "10.0.0.9", "tasktype": "layout", "filenames": []},
            400,
            {"status": "error", "msg": "missing filename(s)"},
        ),
        (
            "",
            {"ip": "10.0.0.9", "tasktype": "layout", "filenames": ["a.png"], "total_num": 2},
            400,
            {"status": "error", "msg": "invalid total_num or filenames size mismatch"},
        ),
        (
            "",
            {"ip": "10.0.0.9", "tasktype": "layout", "filename": "missing.png"},
            400,
            {"status": "error", "msg": "failed to open image file 10.0.0.9/missing.png"},
        ),
    ],
)
async def test_schedule_refusals_are_the_seeds(make_cluster, query, body, status, reply) -> None:
    cluster = await make_cluster()
    response = await post_schedule(cluster, query, body)
    assert (response.status_code, response.json()) == (status, reply)
    assert await cluster.master.journal.counts() == {}


@pytest.mark.parametrize(
    ("query", "strategy"),
    [
        ("?stargety=负载贪心", "load"),
        ("?stargety=load", "load"),
        ("?stargety=roundrobin", "roundrobin"),
        ("?stargety=round_robin", "roundrobin"),
        ("?strategy=roundrobin", "roundrobin"),
        ("?stargety=", "load"),
        ("", "load"),
    ],
)
async def test_schedule_accepts_a_named_upload_and_journals_it_before_the_202(
    make_cluster, query: str, strategy: str
) -> None:
    cluster = await make_cluster()
    upload_file(cluster, "10.0.0.9", "10.0.0.9_7.png", png_bytes())
    body = {
        "ip": "10.0.0.9",
        "tasktype": "layout",
        "filepath": "10.0.0.9/",
        "filename": "10.0.0.9_7.png",
    }
    response = await post_schedule(cluster, query, body)
    assert (response.status_code, response.json()) == (
        202,
        {"status": "queued", "msg": "task enqueued"},
    )
    (row,) = await cluster.master.journal.list_tasks(None, 10)
    assert row.strategy == strategy and row.client_addr == "10.0.0.9"
    assert row.state == "queued"


async def test_schedule_with_an_unmapped_task_type_names_the_config_key(make_cluster) -> None:
    cluster = await make_cluster()
    upload_file(cluster, "10.0.0.9", "a.png", png_bytes())
    body = {
        "ip": "10.0.0.9",
        "tasktype": "Darknet",
        "filenames": ["a.png"],
        "req_id": "r",
        "total_num": 1,
    }
    response = await post_schedule(cluster, "", body)
    assert response.status_code == 400
    assert "tasktypes.Darknet" in response.json()["msg"]


async def test_nodes_shows_devices_in_the_seeds_shape(make_cluster) -> None:
    cluster = await make_cluster(heartbeat_interval_s=0.1)
    await cluster.add_agent("a1", emulate="rk3588", time_scale=100.0)
    await raw_unary(cluster, upload_message("a.png", png_bytes()))
    await asyncio.sleep(0.3)
    (node,) = (await cluster.get("/nodes")).json()["nodes"]
    assert set(node) == {
        "device_id",
        "device_ip",
        "device_type",
        "services",
        "status",
        "metrics",
        "sub_req_count",
        "sub_reqs",
    }
    assert node["device_ip"] == "127.0.0.1" and node["device_type"] == "rk3588"
    assert node["status"] == "online" and node["services"] == ["layout"]
    assert set(node["metrics"]) == {
        "cpu_used",
        "mem_used",
        "xpu_used",
        "net_latency_ms",
        "net_bandwidth_mbps",
    }
    assert node["sub_req_count"] == 1 and node["sub_reqs"][0]["client_ip"] == "127.0.0.1"


async def test_results_are_pushed_with_retries_until_the_receiver_answers(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    receiver = Receiver(tmp_path / "rst", fail_first=2)  # 503, 503, then 200
    cluster.settings.master.result_port = receiver.port
    try:
        await cluster.add_agent("a1")
        reply = json.loads(await raw_unary(cluster, upload_message("a.png", png_bytes())))
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.05)
        assert receiver.received == ["127.0.0.1_1.txt"] and receiver.requests == 3
        assert reply["filename"] == "127.0.0.1_1.png"
        # the receiver has the file before the master has read its 200 and marked the task
        for _ in range(200):
            await cluster.master.journal.flush()
            (row,) = await cluster.master.journal.list_tasks("done", 5)
            if row.delivery == "delivered":
                break
            await asyncio.sleep(0.05)
        assert row.delivery == "delivered"
        assert not Path(row.payload_path).exists()  # the upload goes once delivered
    finally:
        receiver.close()


async def test_a_result_nobody_accepts_becomes_undeliverable_and_stays_readable(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    nobody = Receiver(tmp_path / "x")
    nobody.close()
    cluster.settings.master.result_port = nobody.port
    cluster.settings.master.result_push_ttl_s = 1.0
    await cluster.add_agent("a1")
    await raw_unary(cluster, upload_message("a.png", png_bytes()))
    for _ in range(100):
        rows = await cluster.master.journal.list_tasks(None, 5)
        if rows and rows[0].delivery == "undeliverable":
            break
        await asyncio.sleep(0.1)
    task = (await cluster.get(f"/api/v1/tasks/{rows[0].id}")).json()
    assert task["delivery"] == "undeliverable" and task["state"] == "done"
    assert task["result"]["label"] == ""


async def test_the_legacy_sender_and_the_receiver_work_with_a_master(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()
    server = ReceiverServer(("127.0.0.1", 0), tmp_path / "rst")
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster.settings.master.result_port = server.server_address[1]
    await cluster.add_agent("a1")
    pictures = tmp_path / "req"
    pictures.mkdir()
    for i in range(3):
        (pictures / f"{i}.png").write_bytes(png_bytes(10 + i, 10))
    target = f"127.0.0.1:{cluster.server.grpc_port}"
    report = await asyncio.to_thread(send_legacy, target, sorted(pictures.iterdir()), "layout", 2)
    assert (report.sent, report.saved, report.failed) == (3, 3, 0)
    try:
        for _ in range(200):
            if server.received >= 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(p.name for p in (tmp_path / "rst").iterdir()) == [
            "127.0.0.1_1.txt",
            "127.0.0.1_2.txt",
            "127.0.0.1_3.txt",
        ]
    finally:
        server.shutdown()
        server.server_close()
