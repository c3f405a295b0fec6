"""The seed README's quick start, command by command, against edgesched on one machine.

Each server command is the seed's own with only its host and ports translated (loopback, free
ports); the seed's client programs (send_pic.py) are independent peers (tests/seedpeers.py).
The seed's slave-side recv_server.py and rst_send.py have no counterpart to run: the agent
receives tasks and the master pushes results itself.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgesched.inference.labels import parse_label
from edgesched.tools.demo.pages import write_pages
from edgesched.tools.testing.process_cluster import LocalCluster
from tests.seedpeers import send_pic


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str, condition: Callable[[], Any], cluster: LocalCluster, timeout: float = 120.0
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in cluster.procs:
            cluster._check_alive(name)
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not in {timeout} s")


@pytest.mark.auth  # the API token stays required: the task manager must find it itself
def test_the_seed_readme_commands_run_verbatim_and_deliver_every_label(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"  # the seed's checkout: its config_files/ and workspace/
    (project / "config_files").mkdir(parents=True)
    (project / "config_files" / "static_info.json").write_text("{}")
    write_pages(tmp_path / "pages", 3, seed=5)
    req = project / "workspace/client/data/req"
    req.mkdir(parents=True)
    for picture in (tmp_path / "pages").glob("*.png"):  # not the drawn truth beside them
        (req / picture.name).write_bytes(picture.read_bytes())
    monkeypatch.chdir(project)  # every command runs from the project root, as in the README
    for name in ("EDGESCHED_TOKEN", "EDGESCHED_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    recv_port = free_port()
    local = ["--bind", "127.0.0.1"]

    # python3 ./src/modules/client/rst_recv.py --port 8888 --dir workspace/client/data/rst
    rst_recv = ["client", "recv", "--port", str(recv_port), "--dir", "workspace/client/data/rst"]
    cluster._spawn("rst_recv", [*rst_recv, *local])
    # ./build/src/gateway/gateway --config ./config_files --task workspace/master/data/upload
    gateway = ["gateway", "--config", "./config_files", "--task", "workspace/master/data/upload"]
    ports = ["--http-port", "0", "--link-port", "0", "--result-port", str(recv_port)]
    cluster._spawn("master", [*gateway, *local, *ports])
    endpoints = project / "workspace/master/endpoints.json"
    wait_for("the gateway's ports", endpoints.exists, cluster)
    cluster.http_port = json.loads(endpoints.read_text())["http_port"]
    # python3 ./src/modules/master/task_manager.py --port 9999 --strategy load
    #     --upload_path=workspace/master/data/upload
    task_manager = ["task-manager", "--port", "0", "--strategy", "load"]
    upload_path = "--upload_path=workspace/master/data/upload"
    cluster._spawn("task-manager", [*task_manager, upload_path, *local])
    log = cluster.root / "logs" / "task-manager.log"
    found = wait_for(
        "the task manager's port",
        lambda: re.search(r"gRPC 127\.0\.0\.1:(\d+)", log.read_text() if log.exists() else ""),
        cluster,
    )
    tm_port = int(found.group(1))
    # docker_scheduler_agent --master-ip 127.0.0.1 --master-port 6666
    #     --disconnect 100000 --reconnect 20 --bandwidth-fluctuate
    agent = ["agent", "--master-ip", "127.0.0.1", "--master-port", str(cluster.http_port)]
    churn = ["--disconnect", "100000", "--reconnect", "20", "--bandwidth-fluctuate"]
    cluster._spawn("agent", [*agent, *churn])
    cluster.wait_for_devices(1)

    # python3 ./src/modules/client/send_pic.py --host=127.0.0.1 --port=9999
    #     --dir=workspace/client/data/req --max=200 --workers=8
    replies = send_pic("127.0.0.1", tm_port, Path("workspace/client/data/req"), 200, 8)
    assert sorted(r["filename"] for r in replies) == [f"127.0.0.1_{n}.png" for n in (1, 2, 3)]

    rst = project / "workspace/client/data/rst"
    names = [f"127.0.0.1_{n}.txt" for n in (1, 2, 3)]
    wait_for("every label", lambda: all((rst / n).is_file() for n in names), cluster)
    for name in names:
        assert parse_label((rst / name).read_text()), f"{name} has no detections"
    uploads = project / "workspace/master/data/upload"
    wait_for(
        "delivered uploads removed",
        lambda: not [p for p in uploads.rglob("*") if p.is_file()],
        cluster,
    )
