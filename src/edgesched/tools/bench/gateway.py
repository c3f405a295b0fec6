"""Talking to a running cluster's gateway: its devices coming online, and JSON calls with its API
token."""

from __future__ import annotations

from typing import Any

import httpx

from edgesched.tools.bench.deadline import Deadline
from edgesched.tools.testing.process_cluster import LocalCluster


def wait_devices(
    cluster: LocalCluster, count: int, deadline: Deadline, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Waits for ``count`` online devices (an onnx agent loads its model before it joins)."""
    return cluster.wait_for_devices(count, deadline.cap(timeout, f"waiting for {count} devices"))


def gateway(cluster: LocalCluster, timeout: float = 10.0) -> httpx.Client:
    """A client of the cluster's gateway, with its API token (one connection, kept open)."""
    return httpx.Client(
        base_url=cluster.http_url,
        headers={"authorization": f"Bearer {cluster.api_token}"},
        timeout=timeout,
        verify=cluster.http_verify(),
    )


def http(client: httpx.Client | LocalCluster, method: str, path: str) -> Any:
    """A call to the gateway (a client from ``gateway``, or a cluster: a fresh connection);
    the JSON answer."""
    if isinstance(client, LocalCluster):
        with gateway(client) as fresh:
            return http(fresh, method, path)
    response = client.request(method, path)
    response.raise_for_status()
    return response.json()
