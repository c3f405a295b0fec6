"""A board's install, done as a board does it (issue 12).

The wheel is built from the sources and installed without extras into a fresh venv of a board's
Python (3.9 where this machine has it, scripts/board-python), offline, from the wheelhouse the
Makefile fills (scripts/wheelhouse for this machine's platform, with the oldest grpcio and
protobuf pyproject allows, which are pinned here). From that venv: the CLI, the probe, and a
real agent that joins a master started from the dev venv and runs a task sent by the board's own
`client send`. The quick import check of every board module is tests/unit/test_board_imports.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgesched import extras
from edgesched.tools.testing.pictures import png_bytes
from edgesched.tools.testing.process_cluster import LocalCluster
from tests.unit.test_board_imports import BOARD_MODULES, BOARD_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / "workspace" / "board-wheelhouse"
#: written by `make` once the wheelhouse is complete: the Python it is for (scripts/board-python)
FILLED = WHEELHOUSE / ".complete"


def floor_pins() -> list[str]:
    """``grpcio>=X`` in pyproject's base dependencies becomes ``grpcio==X`` (protobuf too)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for dep in deps:
        match = re.fullmatch(r"(grpcio|protobuf)>=([\w.]+)", dep)
        if match:
            pins.append(f"{match[1]}=={match[2]}")
    assert len(pins) == 2, deps
    return pins


def offline_env() -> dict[str, str]:
    """pip reads nothing but its flags (no config file, no PIP_* such as a find-links folder),
    and a board's Python sees nothing of the dev venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.pop("PYTHONPATH", None)
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(args: list[Any], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding the base install, built and installed offline; its bin/."""
    board_python = Path(FILLED.read_text().strip()) if FILLED.exists() else None
    if board_python is None or not board_python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no wheelhouse at {WHEELHOUSE}: `make test` fills it first")
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: `make test` fills it")
    tmp = tmp_path_factory.mktemp("board")
    sources = tmp / "sources"
    sources.mkdir()
    shutil.copy(ROOT / "pyproject.toml", sources)
    shutil.copy(ROOT / "README.md", sources)
    shutil.copytree(ROOT / "src", sources / "src", ignore=shutil.ignore_patterns("__pycache__"))
    offline: list[Any] = ["--no-index", "--find-links", WHEELHOUSE]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline]
    built = run([*pip_wheel, "-w", tmp / "dist", sources], cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("edgesched-*.whl")
    venv = tmp / "venv"
    made = run([board_python, "-m", "venv", venv], cwd=tmp)
    assert made.returncode == 0, made.stderr
    installed = run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", *offline, wheel, *floor_pins()],
        cwd=tmp,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield venv / "bin"


def test_the_base_install_has_the_oldest_runtime_and_no_extra(board: Path, tmp_path: Path) -> None:
    check = run(
        [
            board / "python",
            "-c",
            "import importlib.util, json, sys, grpc, google.protobuf;"
            "print(json.dumps([grpc.__version__, google.protobuf.__version__,"
            " [m for m in sys.argv[1:] if importlib.util.find_spec(m)]]))",
            *sorted(extras.EXTRA_MODULES),
        ],
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    grpc_version, protobuf_version, present = json.loads(check.stdout)
    assert [f"grpcio=={grpc_version}", f"protobuf=={protobuf_version}"] == floor_pins()
    assert present == [], f"the base install brought an extra's packages: {present}"


def test_every_board_module_imports_on_the_boards_python(board: Path, tmp_path: Path) -> None:
    """On the board's Python (3.9 where this machine has one) and its oldest runtime."""
    imported = run(
        [
            board / "python",
            "-c",
            "import importlib, pkgutil, sys\n"
            "for package in sys.argv[1].split(','):\n"
            "    path = importlib.import_module(package).__path__\n"
            "    for info in pkgutil.walk_packages(path, package + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "for module in sys.argv[2].split(','):\n"
            "    importlib.import_module(module)\n"
            "print('%d.%d' % sys.version_info[:2])",
            ",".join(BOARD_PACKAGES),
            ",".join(BOARD_MODULES),
        ],
        cwd=tmp_path,
    )
    assert imported.returncode == 0, f"on Python {imported.stdout}: {imported.stderr}"


def test_the_board_cli_works_and_a_master_command_names_its_extra(
    board: Path, tmp_path: Path
) -> None:
    listed = run([board / "edgesched", "--help"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "agent" in listed.stdout and "master" in listed.stdout
    helped = run([board / "edgesched", "agent", "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--master-ip" in helped.stdout
    probed = run([board / "edgesched", "probe", "--json"], cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    assert "generic" in json.loads(probed.stdout)["chain"]
    for command in ("master", "gateway", "certs"):
        refused = run([board / "edgesched", command], cwd=tmp_path)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "pip install 'edgesched[master]'" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_an_agent_from_the_board_runs_a_task_from_the_boards_client(
    board: Path, cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_master()  # from the dev venv: the newest grpcio and protobuf
    log = cluster.root / "logs" / "board.log"
    with open(log, "ab") as log_file:
        cluster.procs["board"] = subprocess.Popen(  # cluster.stop() ends it
            [
                str(board / "edgesched"),
                "agent",
                "--master-ip",
                "127.0.0.1",
                "--master-port",
                str(cluster.http_port),
                "--data-dir",
                str(tmp_path / "agent"),
                "--backend",
                "sleep",  # no onnxruntime on the base install: decodes and paces like a board
                "--emulate",
                "rk3588",
            ],
            cwd=tmp_path,
            env={**offline_env(), "EDGESCHED_TOKEN": cluster.token},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (device,) = cluster.wait_for_devices(1)
    assert device["type"] == "rk3588" and device["emulated"]
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "page.png").write_bytes(png_bytes(320, 240))
    out = tmp_path / "labels"
    send = [board / "edgesched", "client", "send", "-H", "127.0.0.1", "-P", cluster.grpc_port]
    sent = run(
        [*send, "-D", pictures, "--out", out, "--no-progress", "--timeout", "120"],
        cwd=tmp_path,
        timeout=180,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "done 1, failed 0" in sent.stdout and "tasks per device" in sent.stdout
    assert (out / "page.txt").exists()
    (after,) = cluster.devices()
    assert after["id"] == device["id"] and after["tasks_done"] == 1
