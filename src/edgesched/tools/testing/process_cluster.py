"""A cluster of edgesched processes on loopback: used by the demo, the benchmarks, the chaos run
and the end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgesched.errors import TransportError


@dataclass
class LocalCluster:
    """A master (or a gateway, a task manager) and agents as ``edgesched`` processes on loopback.

    Owns the processes it spawned (each in its own session, its log under ``root/logs``) and
    the files under ``root``; :meth:`stop` ends every one of them (SIGTERM, then SIGKILL), and
    callers stop it however they leave (a fixture's ``finally``,
    :func:`edgesched.tools.testing.lifecycle.local_cluster`). It talks to the system only as a
    user would: command lines, the master's ``endpoints.json`` and token files, the HTTP API.
    """

    root: Path  #: everything the cluster writes lives under here
    strategy: str = "load"
    log_level: str = "warning"
    extra_master_args: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    grpc_port: int = 0
    http_port: int = 0
    token: str = ""
    api_token: str = ""
    #: mutual TLS: a directory made by `edgesched certs init DIR --agents N` (agent-1… for the
    #: agents; the master's certificate, also a client one, for the cluster's own calls)
    tls_dir: Path | None = None
    agents_started: int = 0

    @property
    def master_dir(self) -> Path:
        return self.root / "master"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.tls_dir else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def tls_args(self, cert: str) -> list[str]:
        if self.tls_dir is None:
            return []
        d = self.tls_dir
        return [
            "--tls-cert",
            str(d / f"{cert}.crt"),
            "--tls-key",
            str(d / f"{cert}.key"),
            "--tls-ca",
            str(d / "ca.crt"),
        ]

    def http_verify(self) -> Any:
        """What httpx needs to talk to this cluster's gateway (CA and a client certificate)."""
        if self.tls_dir is None:
            return True
        import ssl

        context = ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt"))
        # the master certificate is also a client certificate (CLIENT_AUTH)
        context.load_cert_chain(self.tls_dir / "master.crt", self.tls_dir / "master.key")
        return context

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "edgesched", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def start_master(
        self, timeout: float = 30.0, command: str = "master", env: dict[str, str] | None = None
    ) -> None:
        """Starts ``edgesched master`` (or ``gateway``) and waits for its ports."""
        endpoints = self.master_dir / "endpoints.json"
        with contextlib.suppress(FileNotFoundError):
            endpoints.unlink()
        self._spawn(
            "master",
            [
                command,
                "--bind",
                "127.0.0.1",
                "--port" if command == "master" else "--link-port",
                str(self.grpc_port),
                "--http-port",
                str(self.http_port),
                "--data-dir",
                str(self.master_dir),
                "--strategy",
                self.strategy,
                "--log-level",
                self.log_level,
                *self.extra_master_args,
                *self.tls_args("master"),
                *(["--tls-require-client-cert"] if self.tls_dir else []),
            ],
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not endpoints.exists():
            self._check_alive("master")
            if time.monotonic() > deadline:
                raise TransportError("the master did not start in time")
            time.sleep(0.05)
        data = json.loads(endpoints.read_text())
        self.grpc_port, self.http_port = data["grpc_port"], data["http_port"]
        self.token = (self.master_dir / "join-token").read_text().strip()
        self.api_token = (self.master_dir / "api-token").read_text().strip()

    def start_task_manager(self, timeout: float = 30.0) -> int:
        """Starts a split ``edgesched task-manager`` forwarding to this cluster's gateway."""
        self._spawn(
            "task-manager",
            [
                "task-manager",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--strategy",
                self.strategy,
                "--gateway",
                self.http_url,
                "--log-level",
                self.log_level,
            ],
            env={"EDGESCHED_API_TOKEN": self.api_token},
        )
        log_path = self.root / "logs" / "task-manager.log"
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("task-manager")
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            match = re.search(r"gRPC 127\.0\.0\.1:(\d+)", text)
            if match:
                return int(match.group(1))
            if time.monotonic() > deadline:
                raise TransportError("the task manager did not start in time")
            time.sleep(0.05)

    def start_agent(self, name: str, args: list[str]) -> None:
        self.agents_started += 1
        tls = self.tls_args(f"agent-{self.agents_started}")
        self._spawn(
            name,
            [
                "agent",
                "--master-ip",
                "127.0.0.1",
                "--master-port",
                str(self.http_port),
                "--data-dir",
                str(self.root / name),
                "--log-level",
                self.log_level,
                *tls,
                *args,
            ],
            env={"EDGESCHED_TOKEN": self.token},
        )

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            log = (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
            raise TransportError(f"{name} exited with {proc.returncode}:\n{log}")

    def devices(self) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.http_url}/api/v1/devices", timeout=5, verify=self.http_verify()
        )
        response.raise_for_status()
        devices: list[dict[str, Any]] = response.json()["devices"]
        return devices

    def wait_for_devices(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            for name in self.procs:
                self._check_alive(name)
            online = [d for d in self.devices() if d["state"] == "online"]
            if len(online) >= count:
                return online
            if time.monotonic() > deadline:
                raise TransportError(f"only {len(online)} of {count} devices joined in time")
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM everything (agents first), SIGKILL what is still there after ``timeout``."""
        order = [n for n in self.procs if n != "master"] + (
            ["master"] if "master" in self.procs else []
        )
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
