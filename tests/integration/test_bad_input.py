"""One case per row of docs/bad-input.md: the table is the specification and the test data."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from edgesched.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from tests.harness import InProcessCluster, master_settings, png_bytes

TABLE = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def table_rows() -> list[dict[str, str]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("case", "---"):
            rows.append(
                dict(zip(["case", "input", "at", "code", "state", "reason"], cells, strict=True))
            )
    return rows


ROWS = table_rows()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims this size (no pixel data worth the name)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (200, 150), bytes(range(256)) * 351 + bytes(144))
    noise.save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


NATIVE: dict[str, tuple[str, bytes]] = {
    "empty": ("a.png", b""),
    "not-image": ("a.png", b"hello, not a picture"),
    "truncated-jpeg": ("a.jpg", truncated_jpeg()),
    "zero-pixels": ("a.png", png_with_size(0, 0)),
    "bomb": ("a.png", png_with_size(100_000, 100_000)),
    "name-dotdot": ("../../etc/passwd.png", png_bytes()),
    "name-absolute": ("/etc/shadow.png", png_bytes()),
    "name-nul": ("a\x00b\x07c\n.png", png_bytes()),
    "name-long": ("x" * 1000 + ".png", png_bytes()),
    "name-unicode": ("图像 ünï.png", png_bytes()),
}


async def outcome_of_native(cluster: InProcessCluster, name: str, payload: bytes, **kw: Any):
    """(code, final state, reason) of one native submission."""
    try:
        reply = (
            await cluster.submit("k", payload, **kw)
            if not name
            else await _submit_named(cluster, name, payload, **kw)
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, "—", exc.details() or ""
    result = (await cluster.wait([reply.task_id]))[reply.task_id]
    state = common_pb2.TaskState.Name(result.state).removeprefix("TASK_STATE_").lower()
    row = await cluster.master.journal.get(reply.task_id)
    upload = Path(cluster.settings.master.data_dir, "upload").resolve()
    assert Path(row.payload_path).resolve().is_relative_to(upload), row.payload_path
    assert (
        "/" not in result.filename and "\0" not in result.filename and len(result.filename) <= 255
    )
    return "OK", state, result.error


async def _submit_named(cluster: InProcessCluster, name: str, payload: bytes, **kw: Any):
    from edgesched.v1 import client_pb2

    request = client_pb2.SubmitRequest(
        client_id="bad",
        idempotency_key=f"k-{abs(hash(name))}",
        task_type=kw.get("task_type", "layout"),
        filename=name,
        payload=payload,
    )
    return await cluster.stub.Submit(request, timeout=10, metadata=cluster.auth)


class RawAgent:
    """Speaks the agent link by hand, to send what a real agent never would."""

    def __init__(self, cluster: InProcessCluster) -> None:
        self.channel = grpc.aio.insecure_channel(cluster.grpc_target)
        self.queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        self.call = agent_pb2_grpc.AgentLinkStub(self.channel).Connect(self._out())

    async def _out(self) -> Any:
        while True:
            yield await self.queue.get()

    async def register(self, token: str, agent_id: str = "", credential: str = "") -> Any:
        self.queue.put_nowait(
            agent_pb2.AgentMessage(
                register=agent_pb2.Register(
                    protocol=agent_pb2.ProtocolVersion(major=1, minor=0),
                    join_token=token,
                    agent_id=agent_id,
                    credential=credential,
                    device_type="cpu",
                    capabilities=agent_pb2.Capabilities(task_types=["layout"], slots=1),
                )
            )
        )
        return await self.call.read()

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def case_link(cluster: InProcessCluster, case: str, caplog) -> tuple[str, str, str]:
    token = cluster.master.token
    first = RawAgent(cluster)
    reply = await first.register(token)
    agent_id, _credential = reply.registered.agent_id, reply.registered.credential
    try:
        if case == "foreign-result":
            first.queue.put_nowait(
                agent_pb2.AgentMessage(result=agent_pb2.TaskDone(task_id="never-given", attempt=1))
            )
            for _ in range(50):
                if "discarded result of task never-given" in caplog.text:
                    break
                await asyncio.sleep(0.02)
            assert cluster.master.core.devices[agent_id].state.value == "online"
            return "OK", "—", caplog.text
        if case == "duplicate-agent":
            second = RawAgent(cluster)
            try:
                refused = await second.register(token, agent_id=agent_id, credential="guess")
            finally:
                await second.close()
            assert refused.WhichOneof("kind") == "refused"
            assert cluster.master.sessions[agent_id] is not None  # the first one stays
            return "REFUSED", "—", refused.refused.message
        if case == "bad-heartbeat":
            metrics = agent_pb2.DeviceMetrics(
                cpu=float("nan"), memory=-3.0, xpu=250.0, bandwidth_mbps=-1, latency_ms=float("inf")
            )
            first.queue.put_nowait(
                agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=1, metrics=metrics))
            )
            await first.call.read()  # the ack: the heartbeat was handled
            device = (await cluster.get("/api/v1/devices")).json()["devices"][0]
            assert 0 <= device["cpu"] <= 1 and 0 <= device["memory"] <= 1
            assert device["xpu"] is None or 0 <= device["xpu"] <= 1
            assert device["bandwidth_mbps"] >= 0 and device["latency_ms"] >= 0
            state = "device stays online" if device["state"] == "online" else device["state"]
            return "OK", "—", state
    finally:
        await first.close()
    raise AssertionError(case)


async def case_seed(cluster: InProcessCluster, case: str) -> tuple[str, str, str]:
    body = (
        b"{broken"
        if case == "seed-bad-json"
        else json.dumps(
            {"filename": "a.png", "content_b64": "%%%not base64", "tasktype": "layout"}
        ).encode()
    )
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        try:
            await channel.unary_unary("/ImageUpload/UploadImage")(body, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, "—", exc.details() or ""
    return "OK", "—", ""


async def case_disk_full(tmp_path: Path) -> tuple[str, str, str]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full case needs root (a small tmpfs); CI runs as root")
        pytest.skip("the disk-full case needs root to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    cluster = InProcessCluster(mount, master_settings(mount))
    try:
        await cluster.start()
        with open(mount / "filler", "wb", buffering=0) as filler:  # fills what is left
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        picture = png_bytes(400, 400, (1, 2, 3)) + b"\0" * 200_000
        try:
            await cluster.submit("full", picture)
        except grpc.aio.AioRpcError as exc:
            upload = mount / "master" / "upload"
            leftovers = list(upload.rglob("*")) if upload.exists() else []
            assert [p for p in leftovers if p.is_file()] == [], "nothing half-written"
            assert await cluster.master.journal.counts() == {}
            return exc.code().name, "—", exc.details() or ""
        return "OK", "?", ""
    finally:
        try:
            await cluster.close()
        finally:  # a mount left behind breaks pytest's clean-up of its temp folders
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
async def test_every_row_of_the_bad_input_table_holds(row, make_cluster, tmp_path, caplog) -> None:
    case = row["case"]
    caplog.set_level("INFO")
    if case == "disk-full":
        code, state, reason = await case_disk_full(tmp_path)
    else:
        cluster = await make_cluster()
        cluster.settings.master.max_upload_bytes = 512 * 1024
        if case in NATIVE or case in ("too-big", "unknown-type"):
            await cluster.add_agent("a1")
            if case == "too-big":
                code, state, reason = await outcome_of_native(
                    cluster, "", b"\x89PNG" + b"0" * 600_000
                )
            elif case == "unknown-type":
                code, state, reason = await outcome_of_native(
                    cluster, "a.png", png_bytes(), task_type="nosuchmodel"
                )
            else:
                name, payload = NATIVE[case]
                code, state, reason = await outcome_of_native(cluster, name, payload)
        elif case.startswith("seed-"):
            code, state, reason = await case_seed(cluster, case)
        else:
            code, state, reason = await case_link(cluster, case, caplog)
    assert code == row["code"], (case, reason)
    assert state == row["state"], (case, reason)
    if row["reason"] != "—":
        assert row["reason"] in reason, (case, reason)


def test_the_table_covers_every_case_the_issue_names() -> None:
    cases = {r["case"] for r in ROWS}
    assert {
        "empty",
        "not-image",
        "truncated-jpeg",
        "zero-pixels",
        "bomb",
        "too-big",
        "name-dotdot",
        "name-absolute",
        "name-nul",
        "name-long",
        "name-unicode",
        "seed-bad-json",
        "seed-bad-base64",
        "unknown-type",
        "foreign-result",
        "duplicate-agent",
        "bad-heartbeat",
        "disk-full",
    } <= cases
