"""The package's layers hold: read from the source's imports (every import, a function's too).

(a) No import cycle: a module may import another only if that one does not import it back,
    through any chain.
(b) ``edgesched.core`` is pure: it imports only data-handling standard modules (an allowlist)
    and, of the package, itself, the settings' types, the errors and the board facts. The journal
    keeps its own file (sqlite3, os, threading and a queue for its writer thread, asyncio only to
    hand results to the caller's event loop as futures) but no network, server, process or
    other I/O package: "no I/O" for the journal means no I/O but its database file.
(c) What runs on a board (the agent side) imports nothing of the master or of the tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "edgesched"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        if "v1" in path.relative_to(SRC).parts:  # generated gRPC code
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in its source (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from package import module` imports the module; else the names' module
                full = f"{base}.{alias.name}"
                names.add(full if full in MODULES else base)
    return names


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal(name: str) -> set[str]:
    return {m for m in IMPORTS[name] if m in MODULES and m != name}


def _cycle() -> list[str] | None:
    """One import cycle of the package, as the chain of modules, or None."""
    graph = {name: sorted(_internal(name)) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_imports_inside_functions() -> None:
    """The checks below can fail: a function-level import is an edge of the graph."""
    # edgesched.cli.agent imports the agent only when the command runs
    assert "edgesched.agent.agent" in _internal("edgesched.cli.agent")
    assert "edgesched.core.strategies" in _internal("edgesched.cli.master")


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_cycle_finder_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(IMPORTS, "edgesched.errors", {"edgesched.config"})
    monkeypatch.setitem(IMPORTS, "edgesched.config", {"edgesched.errors"})
    assert _cycle() is not None


#: what the pure core may import of the standard library: data handling only
CORE_STDLIB = {
    "__future__",
    "bisect",
    "collections",
    "collections.abc",
    "copy",
    "dataclasses",
    "enum",
    "functools",
    "heapq",
    "itertools",
    "math",
    "random",  # a seeded random.Random is injected; the module gives the type
    "typing",
}
#: what the core may import of the package besides itself: types, errors and pure data
CORE_PACKAGE = {"edgesched.config", "edgesched.errors", "edgesched.boards", "edgesched.kinds"}

#: what the journal may import of the package besides itself: errors, failpoints and the pure
#: data types it stores (task states and failure kinds, a result's detections)
JOURNAL_PACKAGE = {
    "edgesched",
    "edgesched.errors",
    "edgesched.failpoints",
    "edgesched.kinds",
    "edgesched.inference.labels",
}
#: I/O the journal must not do: no network, server, event-loop-driving or process package
JOURNAL_FORBIDDEN = {
    "socket",
    "ssl",
    "selectors",
    "http",
    "urllib",
    "grpc",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "subprocess",
    "multiprocessing",
    "signal",
    "shutil",
}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_core_does_no_io() -> None:
    wrong = {}
    for name in MODULES:
        if not _within(name, "edgesched.core"):
            continue
        bad = {
            m
            for m in IMPORTS[name]
            if not _within(m, "edgesched.core") and m not in CORE_STDLIB | CORE_PACKAGE
        }
        if bad:
            wrong[name] = sorted(bad)
    assert not wrong, f"the core imports beyond pure data handling: {wrong}"


def test_the_journal_does_no_network_or_process_io() -> None:
    wrong = {}
    for name in MODULES:
        if not _within(name, "edgesched.journal"):
            continue
        bad = {
            m
            for m in IMPORTS[name]
            if m.partition(".")[0] in JOURNAL_FORBIDDEN
            or (
                _within(m, PACKAGE)
                and not _within(m, "edgesched.journal")
                and m not in JOURNAL_PACKAGE
            )
        }
        if bad:
            wrong[name] = sorted(bad)
    assert not wrong, f"the journal imports a network, process or outside module: {wrong}"


#: what runs on a board (DESIGN §10): packages, every module of them, and single modules
AGENT_SIDE = (
    "edgesched.agent",
    "edgesched.inference",
    "edgesched.wire",
    "edgesched.kinds",
    "edgesched.client",
    "edgesched.boards",
    "edgesched.config",
    "edgesched.errors",
    "edgesched.extras",
    "edgesched.filenames",
    "edgesched.logs",
    "edgesched.clock",
    "edgesched.failpoints",
    "edgesched.masters",
    "edgesched.stages",
    "edgesched.stats",
)


def test_the_agent_side_imports_nothing_of_the_master_or_the_tools() -> None:
    wrong = {}
    for name in MODULES:
        if not any(_within(name, side) for side in AGENT_SIDE):
            continue
        bad = {
            m
            for m in IMPORTS[name]
            if _within(m, "edgesched.master") or _within(m, "edgesched.tools")
        }
        if bad:
            wrong[name] = sorted(bad)
    assert not wrong, f"agent-side modules import the master's or the tools': {wrong}"


def test_nothing_a_board_or_a_master_runs_imports_the_tools() -> None:
    # tooling (demo, bench, chaos, sim, the cluster harness) lives apart: only the commands
    # that start it (edgesched.cli, importing it when run) and the tools themselves reach it
    wrong = {
        name: sorted(m for m in IMPORTS[name] if _within(m, "edgesched.tools"))
        for name in MODULES
        if not _within(name, "edgesched.tools") and not _within(name, "edgesched.cli")
    }
    wrong = {name: found for name, found in wrong.items() if found}
    assert not wrong, f"runtime modules import the tools: {wrong}"
