"""The upload space check looks free space up at most every FREE_SPACE_TTL_S per folder and
takes what it admitted since off the figure; it looks again before it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesched.errors import DiskFullError
from edgesched.master import storage
from edgesched.master.storage import FREE_SPACE_TTL_S, MIB, DiskGuard


def test_free_space_is_looked_up_once_per_interval_and_uploads_are_taken_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[Path] = []
    free = {"bytes": 10 * MIB}

    def fake_free(path: Path) -> int:
        looked.append(path)
        return free["bytes"]

    monkeypatch.setattr(storage, "free_bytes", fake_free)
    now = [0.0]
    guard = DiskGuard(tmp_path, min_free_mb=1, reserve_mb=0, monotonic=lambda: now[0])
    for _ in range(4):
        guard.check_upload(tmp_path, 2 * MIB)  # 10 → 2 MiB left by the figure
    assert len(looked) == 1
    with pytest.raises(DiskFullError):  # 2 MiB by the figure: it looks again, finds 2 MiB
        free["bytes"] = 2 * MIB
        guard.check_upload(tmp_path, 2 * MIB)
    assert len(looked) == 2  # refused only after a fresh look
    free["bytes"] = 10 * MIB
    now[0] += FREE_SPACE_TTL_S
    guard.check_upload(tmp_path, 2 * MIB)  # the interval is over: looked up again
    assert len(looked) == 3
