"""The generated gRPC code in src/edgesched/v1 matches the .proto files (regenerated here) and
loads with the oldest runtime a board has as well as with the master's (no version check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOC_PYTHON = ROOT / "workspace" / "protoc-venv" / "bin" / "python"  # `make proto-tools`


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    if not PROTOC_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("no grpcio-tools venv: `make test` runs `make proto-tools` first")
        pytest.skip("no grpcio-tools venv: `make proto-tools` (make test does it)")
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable, "PROTOC_PYTHON": str(PROTOC_PYTHON)},
    )
    generated = sorted(p.name for p in (tmp_path / "edgesched" / "v1").iterdir())
    checked_in = sorted(
        p.name for p in (ROOT / "src" / "edgesched" / "v1").iterdir() if p.suffix in (".py", ".pyi")
    )
    assert generated == checked_in
    for name in generated:
        fresh = (tmp_path / "edgesched" / "v1" / name).read_text()
        current = (ROOT / "src" / "edgesched" / "v1" / name).read_text()
        assert fresh == current, f"{name} is stale: run `make proto`"


def test_every_agent_message_kind_the_issue_names_is_in_the_contract() -> None:
    from edgesched.v1 import agent_pb2, client_pb2

    agent_kinds = {f.name for f in agent_pb2.AgentMessage.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert {"register", "heartbeat", "result", "failure"} <= agent_kinds
    master_kinds = {
        f.name for f in agent_pb2.MasterMessage.DESCRIPTOR.oneofs_by_name["kind"].fields
    }
    assert {"assignment", "chunk", "cancel", "drain"} <= master_kinds
    register = {f.name for f in agent_pb2.Register.DESCRIPTOR.fields}
    assert {"protocol", "join_token", "capabilities"} <= register
    caps = {f.name for f in agent_pb2.Capabilities.DESCRIPTOR.fields}
    assert {"task_types", "model_formats", "sub_devices"} <= caps
    submit = {f.name for f in client_pb2.SubmitRequest.DESCRIPTOR.fields}
    assert {"idempotency_key", "task_type", "payload"} <= submit
    methods = {m.name for m in client_pb2.DESCRIPTOR.services_by_name["TaskService"].methods}
    assert methods == {
        "Submit",
        "SubmitStream",
        "SubmitBatches",
        "WatchResults",
        "WatchResultBatches",
        "GetTask",
        "CancelTask",
    }


def test_generated_code_does_not_demand_its_generators_runtime() -> None:
    """Code from a newer protoc or grpcio-tools refuses an older runtime (a board's on Python
    3.9, pyproject's floor); this code is made so that it loads with every runtime from the floor
    up (the board-install test loads it with the floor, every other test with the newest)."""
    for path in sorted((ROOT / "src" / "edgesched" / "v1").glob("*.py")):
        text = path.read_text()
        assert "ValidateProtobufRuntimeVersion" not in text, path.name
        assert "GRPC_GENERATED_VERSION" not in text, path.name
