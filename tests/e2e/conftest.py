from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesched.tools.testing.process_cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Processes on loopback; every one is stopped (SIGTERM, then SIGKILL) at teardown."""
    made = LocalCluster(root=tmp_path / "cluster", log_level="info")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(autouse=True)
def _plain_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Most process tests speak raw gRPC without the API token: their masters run with auth
    off. Tests marked `auth` keep the default (the client API needs the token)."""
    if request.node.get_closest_marker("auth") is None:
        monkeypatch.setenv("EDGESCHED_MASTER_AUTH", "off")
