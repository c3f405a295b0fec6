"""Mutual TLS built with `edgesched certs init`, plain-text peers refused, no secret in logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from edgesched.certs import init_certs
from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from edgesched.v1 import client_pb2, client_pb2_grpc, common_pb2

EDGESCHED = [sys.executable, "-m", "edgesched"]


def secure_stub(
    cluster: LocalCluster, ca: Path, cert: Path, key: Path
) -> tuple[grpc.Channel, client_pb2_grpc.TaskServiceStub]:
    credentials = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    channel = grpc.secure_channel(cluster.grpc_target, credentials)
    return channel, client_pb2_grpc.TaskServiceStub(channel)


@pytest.mark.auth
def test_certs_init_then_a_master_and_an_agent_form_a_mutual_tls_cluster(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run(
        [*EDGESCHED, "certs", "init", str(certs), "--agents", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    cluster.tls_dir = certs
    cluster.start_master()
    cluster.start_agent("agent", ["--backend", "sleep"])  # agent-1's certificate
    (device,) = cluster.wait_for_devices(1)
    assert device["state"] == "online"
    metadata = (("authorization", f"Bearer {cluster.api_token}"),)
    channel, stub = secure_stub(
        cluster, certs / "ca.crt", certs / "agent-2.crt", certs / "agent-2.key"
    )
    with channel:
        reply = stub.Submit(
            client_pb2.SubmitRequest(
                client_id="c",
                idempotency_key="k",
                task_type="layout",
                filename="a.png",
                payload=png_bytes(),
            ),
            timeout=20,
            metadata=metadata,
        )
        (result,) = stub.WatchResults(
            client_pb2.WatchRequest(task_ids=[reply.task_id]), timeout=60, metadata=metadata
        )
    assert result.state == common_pb2.TASK_STATE_DONE
    # a plain-text client gets nowhere, on gRPC or HTTP
    with (
        grpc.insecure_channel(cluster.grpc_target) as plain,
        pytest.raises(grpc.RpcError) as caught,
    ):
        client_pb2_grpc.TaskServiceStub(plain).GetTask(
            client_pb2.GetTaskRequest(task_id=reply.task_id), timeout=5, metadata=metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{cluster.http_port}/healthz", timeout=5)


@pytest.mark.auth
def test_an_agent_with_a_certificate_from_another_ca_is_refused_and_never_listed(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    ours = init_certs(tmp_path / "ours", agents=1)
    theirs = init_certs(tmp_path / "theirs", agents=1)
    cluster.tls_dir = ours.directory
    cluster.start_master()
    stranger = theirs.agents[0]
    cluster.start_agent(
        "stranger",
        [
            "--backend",
            "sleep",
            "--tls-cert",
            str(stranger.cert),
            "--tls-key",
            str(stranger.key),
            "--tls-ca",
            str(ours.ca_cert),
        ],
    )
    import time

    time.sleep(3)  # it keeps trying; give it the time to fail a few handshakes
    assert cluster.devices() == []
    assert cluster.procs["stranger"].poll() is None, "it retries, it is never admitted"


@pytest.mark.auth
def test_a_tls_demo_runs_end_to_end_and_no_log_line_holds_a_secret(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *EDGESCHED,
            "demo",
            "--tasks",
            "6",
            "--tls",
            "--json",
            "--time-scale",
            "10",
            "--workspace",
            "ws",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["done"] == 6
    demo = tmp_path / "ws" / "demo"
    secrets = [
        (demo / "master" / "join-token").read_text().strip(),
        (demo / "master" / "api-token").read_text().strip(),
    ]
    for identity in demo.glob("agent-*/agent.json"):
        secrets.append(json.loads(identity.read_text())["credential"])
    assert len(secrets) == 5
    logs = [p.read_text(errors="replace") for p in (demo / "logs").glob("*.log")]
    logs += [done.stdout, done.stderr]
    assert len(logs) >= 6
    for secret in secrets:
        assert all(secret not in text for text in logs), "a secret reached a log"
