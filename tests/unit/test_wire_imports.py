"""The generated protobuf code (``edgesched.v1``) is imported only by ``edgesched.wire`` and the
modules that own a gRPC servicer, stub or channel (issue 15): everything else speaks domain
types (``Detection``, ``TaskState``, ``FailureKind``) and builds messages through ``wire``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "edgesched"

#: who may import edgesched.v1, and why
ALLOWED = {
    "edgesched.wire.link",  # protobuf ⇄ domain: the agent link's messages
    "edgesched.wire.results",  # detections, board timings
    "edgesched.wire.tasks",  # task states, submissions, results
    "edgesched.master.intake",  # the client API's servicer
    "edgesched.master.link",  # the agent link's servicer
    "edgesched.master.session",  # an agent's outgoing stream (assignments, payload chunks)
    "edgesched.master.server",  # registers the servicers
    "edgesched.agent.link",  # the agent link's stub and channel
    "edgesched.client.send",  # the client API's stub
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_generated(tree: ast.AST) -> list[int]:
    """Lines that import edgesched.v1 (any form, at any depth: lazy imports count too)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(name == "edgesched.v1" or name.startswith("edgesched.v1.") for name in names):
            lines.append(node.lineno)
    return lines


def importers() -> dict[str, list[int]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module == "edgesched.v1" or module.startswith("edgesched.v1."):
            continue  # the generated code itself
        lines = _imports_generated(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if lines:
            found[module] = lines
    return found


def test_only_wire_and_the_grpc_owners_import_the_generated_code() -> None:
    strays = {m: lines for m, lines in importers().items() if m not in ALLOWED}
    assert not strays, (
        "these modules import edgesched.v1; build and read messages through edgesched.wire "
        f"instead (or, for a new servicer/stub owner, extend ALLOWED): {strays}"
    )


def test_the_allow_list_names_real_importers() -> None:
    # a stale entry would let a module start importing the generated code unnoticed
    assert set(importers()) == ALLOWED


def test_the_check_sees_every_form_of_import() -> None:
    source = (
        "import edgesched.v1.agent_pb2\n"
        "from edgesched.v1 import common_pb2\n"
        "from edgesched import v1\n"
        "def f():\n"
        "    from edgesched.v1.client_pb2 import SubmitRequest\n"
        "from edgesched.wire import link\n"
    )
    assert _imports_generated(ast.parse(source)) == [1, 2, 3, 5]
