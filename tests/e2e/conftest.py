from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesched.demo.cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Processes on loopback; every one is stopped (SIGTERM, then SIGKILL) at teardown."""
    made = LocalCluster(root=tmp_path / "cluster", log_level="info")
    try:
        yield made
    finally:
        made.stop()
