from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from edgesched.tools.testing.inprocess_cluster import InProcessCluster, master_settings


@pytest.fixture
async def make_cluster(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, InProcessCluster]]]:
    """Starts in-process clusters; closes every one of them (agents, servers, journal)."""
    made: list[InProcessCluster] = []

    async def factory(**scheduling: Any) -> InProcessCluster:
        cluster = InProcessCluster(tmp_path, master_settings(tmp_path, **scheduling))
        made.append(cluster)
        await cluster.start()
        return cluster

    yield factory
    for cluster in made:
        await cluster.close()
