"""What a board runs imports nothing beyond the base install (issue 12).

A board has ``pip install edgesched`` only: the agent, ``probe``, the client, ``token`` and
``config show`` must work there, so none of their modules may import an extra's package (the
master's web stack, onnxruntime) or anything else outside the base dependencies at import time.
Checked in a subprocess whose imports of the extras' packages fail as on a board; the slower
check that really installs the wheel like a board is tests/e2e/test_board_install.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesched import extras

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: the board's side of the package, every module of these packages included
#: (every command module too: a command's body imports what only it needs)
BOARD_PACKAGES = (
    "edgesched.agent",
    "edgesched.inference",
    "edgesched.client",
    "edgesched.cli",
    "edgesched.v1",
    "edgesched.wire",
    "edgesched.config",
)
BOARD_MODULES = (
    "edgesched.boards",
    "edgesched.errors",
    "edgesched.extras",
    "edgesched.filenames",
    "edgesched.logs",
    "edgesched.clock",
    "edgesched.failpoints",
    "edgesched.kinds",
    "edgesched.stages",
    "edgesched.stats",  # the client's report computes its percentiles there
    "edgesched.master.token",  # `token show`, and the client's default API token
)

#: imports every board module, runs one CLI command in-process, prints the modules loaded
PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys

blocked = set(sys.argv[1].split(","))

class Board(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not on a board)", name=name)
        return None

sys.meta_path.insert(0, Board())
for package in sys.argv[2].split(","):
    importlib.import_module(package)
    for info in pkgutil.walk_packages(sys.modules[package].__path__, package + "."):
        importlib.import_module(info.name)
for module in sys.argv[3].split(","):
    importlib.import_module(module)
from edgesched.cli import main
try:
    main(sys.argv[5:], prog_name="edgesched")
except SystemExit as exc:
    code = exc.code
with open(sys.argv[4], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def base_install_modules() -> set[str]:
    """Top-level modules of the base dependencies and everything they depend on."""
    todo = [_name(r) for r in PYPROJECT["project"]["dependencies"]]
    closure: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in closure:
            continue
        closure.add(dist)
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # tomli: only below Python 3.11
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(_name(d) in closure for d in dists)
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["agent", "--help"],
        ["probe", "--json"],
        ["client", "send", "--help"],
        ["client", "recv", "--help"],
        ["config", "show"],
        ["token", "show", "--help"],
        ["master", "--help"],  # listed and described on a board, though it cannot run there
    ],
)
def test_board_commands_import_only_the_base_install(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            ",".join(sorted(extras.EXTRA_MODULES)),
            ",".join(BOARD_PACKAGES),
            ",".join(BOARD_MODULES),
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(out.read_text())
    assert seen["code"] in (0, None), run.stdout + run.stderr
    allowed = base_install_modules() | set(sys.stdlib_module_names) | {"edgesched"}
    # grpc's own: Cython's runtime, and grpc_tools, which grpc tries and does without
    allowed |= {"cython_runtime", "grpc_tools"}
    foreign = sorted(
        {m.partition(".")[0] for m in seen["modules"]}
        - allowed
        - {m for m in seen["modules"] if m.startswith("_")}  # interpreter and site internals
    )
    assert not foreign, f"`edgesched {' '.join(args)}` imports beyond the base install: {foreign}"


def test_the_probe_really_blocks_an_extra(tmp_path: Path) -> None:
    """The check above can fail: a module importing a master-only package is caught."""
    run = subprocess.run(
        [
            *(sys.executable, "-c", PROBE, "httpx", "edgesched.agent"),
            *("edgesched.tools.bench.failover", str(tmp_path / "m.json"), "--help"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "No module named 'httpx' (not on a board)" in run.stderr


def test_extras_match_pyproject() -> None:
    declared = PYPROJECT["project"]["optional-dependencies"]
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in ("master", "onnx"):
        # an extra may raise a base dependency's floor (the master's grpcio): not its own package
        assert {_name(dist) for dist, _ in extras.EXTRAS[extra]} == {
            _name(r) for r in declared[extra]
        } - base, f"edgesched.extras.EXTRAS[{extra!r}] differs from pyproject's"


def test_a_command_whose_extra_is_missing_names_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgesched.cli import main

    monkeypatch.setitem(extras.EXTRAS, "master", (("no-such-dist", "edgesched_no_such_module"),))
    for args in (["master"], ["bench", "makespan"], ["tasks", "ls"], ["certs", "init", "x"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "pip install 'edgesched[master]'" in result.stderr
        assert "no-such-dist not installed" in result.stderr
        assert "Traceback" not in result.output


def test_command_summaries_are_their_own() -> None:
    """`edgesched --help` lists every command by a copy of its summary: it stays true."""
    import click

    from edgesched.cli.group import COMMANDS, main

    ctx = click.Context(main)
    for name, entry in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(1000) == entry.summary, name
