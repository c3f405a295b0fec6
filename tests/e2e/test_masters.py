"""Several master processes on one PostgreSQL journal (LocalCluster): one leads, the others
answer as standbys with where it is; SIGKILL the leader and another leads (within a bounded
time: the test asserts that it happens, not how fast)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from edgesched.tools.testing.process_cluster import LocalCluster

LIMIT_S = 90.0


def health(cluster: LocalCluster, index: int) -> httpx.Response:
    return httpx.get(f"{cluster.master_url(cluster.master_host(index))}/healthz", timeout=5)


def test_three_masters_the_leader_killed_another_leads(cluster: LocalCluster, pg_dsn: str) -> None:
    first = cluster.start_masters(3, pg_dsn, timeout=LIMIT_S)
    assert [cluster.master_role(i) for i in range(3)].count("leader") == 1
    for index in set(range(3)) - {first}:
        answer = health(cluster, index)
        assert answer.status_code == 503
        assert answer.json()["role"] == "standby"
        assert answer.json()["leader"] == {
            "host": cluster.master_host(first),
            "grpc_port": cluster.grpc_port,
            "http_port": cluster.http_port,
        }
    token = cluster.token
    assert token

    cluster.kill_master(first, signal.SIGKILL)
    second = cluster.wait_for_leader(LIMIT_S, other_than=first)
    assert second != first
    assert cluster.token == token  # the join token is the cluster's, not one master's
    assert health(cluster, second).json()["role"] == "leader"

    cluster.start_one_master(first, LIMIT_S)  # back, as a standby of the new leader
    answer = health(cluster, first)
    for _ in range(int(LIMIT_S * 10)):
        if answer.status_code == 503 and answer.json()["leader"] is not None:
            break
        time.sleep(0.1)
        answer = health(cluster, first)
    assert answer.json()["role"] == "standby"
    assert answer.json()["leader"]["host"] == cluster.master_host(second)


def test_a_stopped_leader_hands_over(tmp_path: Path, pg_dsn: str) -> None:
    with LocalCluster(root=tmp_path / "c", log_level="info") as cluster:
        first = cluster.start_masters(2, pg_dsn, timeout=LIMIT_S)
        cluster.kill_master(first, signal.SIGTERM)  # steps down: the other takes over
        assert cluster.wait_for_leader(LIMIT_S, other_than=first) == 1 - first


def test_a_frozen_leader_is_replaced_after_its_lease_and_steps_down_when_thawed(
    tmp_path: Path, pg_dsn: str, monkeypatch
) -> None:
    monkeypatch.setenv("EDGESCHED_MASTER_LEASE_S", "2")
    monkeypatch.setenv("EDGESCHED_MASTER_LEASE_RENEW_S", "0.5")
    with LocalCluster(root=tmp_path / "c", log_level="info") as cluster:
        first = cluster.start_masters(2, pg_dsn, timeout=LIMIT_S)
        frozen = cluster.procs[cluster.master_name(first)]
        frozen.send_signal(signal.SIGSTOP)  # alive, its connection open, silent
        try:
            second = cluster.wait_for_leader(LIMIT_S, other_than=first)
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert second == 1 - first
        for _ in range(int(LIMIT_S * 10)):  # thawed, it finds its lease taken
            if cluster.master_role(first) == "standby":
                break
            time.sleep(0.1)
        assert cluster.master_role(first) == "standby"
        assert cluster.master_role(second) == "leader"
