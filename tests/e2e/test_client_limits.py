"""`edgesched client send` in a process: ports are checked, --timeout is honoured."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from edgesched.tools.testing.pictures import png_bytes

EDGESCHED = [sys.executable, "-m", "edgesched"]


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *EDGESCHED,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "EDGESCHED_API_TOKEN": ""},
    )
    try:
        # generous: the run itself is bounded by --timeout; this only keeps a hang from
        # holding the suite
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def pictures(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(count):
        (folder / f"p{i}.png").write_bytes(png_bytes(color=(i, 7, 7)))
    return folder


async def test_a_port_past_65535_is_refused_not_wrapped(tmp_path: Path) -> None:
    folder = pictures(tmp_path, 1)
    code, _, err = await run_cli(
        "client", "send", "-P", "65599", "-D", str(folder), "--no-progress", cwd=tmp_path
    )
    assert code == 2 and "65599 is not in the range 1<=x<=65535" in err


async def test_send_stops_at_its_timeout_and_names_the_tasks_not_finished(
    make_cluster, tmp_path: Path
) -> None:
    cluster = await make_cluster()  # no agent: every task stays queued
    folder = pictures(tmp_path, 3)
    code, _, err = await run_cli(
        "client",
        "send",
        "-P",
        str(cluster.server.grpc_port),
        "-D",
        str(folder),
        "--timeout",
        "2",
        "--no-progress",
        "--api-token",
        cluster.master.api_token.current(),
        "--out",
        str(tmp_path / "rst"),
        cwd=tmp_path,
    )
    assert code == 1, err
    assert "--timeout 2 s passed: 3 tasks not finished" in err
    assert all(f"p{i}.png (task " in err for i in range(3))
    assert (await cluster.master.journal.counts()) == {"queued": 3}  # still there, not lost
