"""API authentication and limits on a real in-process master."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from edgesched.agent.agent import Agent
from edgesched.agent.link import Refused
from edgesched.master.token import write_token
from edgesched.tools.testing.inprocess_cluster import InProcessCluster
from edgesched.tools.testing.pictures import png_bytes
from edgesched.v1 import client_pb2
from tests.seedpeers import upload_message


def request(key: str) -> client_pb2.SubmitRequest:
    return client_pb2.SubmitRequest(
        client_id="c",
        idempotency_key=key,
        task_type="layout",
        filename="a.png",
        payload=png_bytes(),
    )


async def test_a_client_without_the_api_token_cannot_submit(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    for metadata in ((), (("authorization", "Bearer esa_wrong"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cluster.stub.Submit(request("k"), timeout=10, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await cluster.master.journal.counts() == {}
    reply = await cluster.stub.Submit(request("k"), timeout=10, metadata=cluster.auth)
    assert reply.task_id


async def test_seed_protocols_stay_open_unless_auth_is_all(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        upload = channel.unary_unary("/ImageUpload/UploadImage")
        saved = json.loads(await upload(upload_message("a.png", png_bytes()), timeout=10))
        assert saved["filename"].endswith("_1.png")
        cluster.settings.master.auth = "all"  # --require-auth
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(upload_message("b.png", png_bytes()), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with httpx.AsyncClient() as client:
        refused = await client.post(f"{cluster.http}/schedule", json={"ip": "x"})
    assert refused.status_code == 401


async def test_reads_are_open_on_loopback_unless_configured(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    assert (await cluster.get("/api/v1/devices")).status_code == 200
    cluster.settings.master.auth_read = "on"
    assert (await cluster.get("/api/v1/devices")).status_code == 401
    assert (await cluster.get("/healthz")).status_code == 200  # health and discovery stay open
    assert (await cluster.get("/api/v1/link")).status_code == 200


async def test_an_agent_without_a_valid_token_is_refused_and_never_listed(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    for token in ("", "esj_wrong"):
        settings = cluster.agent_settings(f"intruder{len(token)}", token=token)
        with pytest.raises(Refused, match="join token"):
            await asyncio.wait_for(Agent(settings).run(asyncio.Event()), 20)
    assert (await cluster.get("/api/v1/devices")).json()["devices"] == []


async def test_rotating_the_join_token_keeps_admitted_agents_and_refuses_the_old_one(
    make_cluster,
) -> None:
    cluster: InProcessCluster = await make_cluster()
    admitted = await cluster.add_agent("a1")
    old = cluster.master.token
    new = write_token(cluster.settings.master.data_dir, "join")
    assert cluster.master.token == new != old
    reply = await cluster.submit("k", png_bytes())
    assert (await cluster.wait([reply.task_id]))[
        reply.task_id
    ].device_id == admitted.identity.agent_id
    await cluster.stop_agent(admitted)
    await cluster.add_agent("a1")  # rejoins with its credential, not the (rotated) token
    late = cluster.agent_settings("late", token=old)
    with pytest.raises(Refused, match="join token"):
        await asyncio.wait_for(Agent(late).run(asyncio.Event()), 20)


async def test_a_client_over_its_in_flight_limit_is_told_so(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    cluster.settings.master.max_inflight_per_client = 2
    await cluster.submit("k1", png_bytes())
    await cluster.submit("k2", png_bytes())  # no agent: both stay in flight
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.submit("k3", png_bytes())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_inflight_per_client" in (caught.value.details() or "")


async def test_a_link_message_over_the_limit_is_refused(make_cluster) -> None:
    cluster: InProcessCluster = await make_cluster()
    await cluster.close()
    cluster.settings.master.max_link_message_bytes = 64 * 1024
    cluster.settings.master.port = cluster.settings.master.http_port = 0
    await cluster.start()
    big = png_bytes(400, 400) + b"\0" * 100_000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.submit("big", big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
