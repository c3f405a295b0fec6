"""A cluster of edgesched processes on loopback: used by the demo, the benchmarks, the chaos run
and the end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
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
    #: several masters (:meth:`start_masters`): master i is ``master-i``, bound to 127.0.0.{i+1}
    #: with the same ports as the others, its data in ``root/master-i``, all on ``journal``
    masters: int = 0
    journal: str = ""
    #: the master the cluster's own calls go to: the leader, once :meth:`wait_for_leader` saw it
    host: str = "127.0.0.1"

    @property
    def master_dir(self) -> Path:
        return self.root / "master"

    @property
    def http_url(self) -> str:
        return self.master_url(self.host)

    def master_url(self, host: str) -> str:
        scheme = "https" if self.tls_dir else "http"
        return f"{scheme}://{host}:{self.http_port}"

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
        return f"{self.host}:{self.grpc_port}"

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
        # the token files too: a master on a PostgreSQL journal serves as a standby first and
        # writes them once elected
        tokens = [self.master_dir / "join-token", self.master_dir / "api-token"]
        while not endpoints.exists() or not all(t.exists() for t in tokens):
            self._check_alive("master")
            if time.monotonic() > deadline:
                raise TransportError("the master did not start in time")
            time.sleep(0.05)
        data = json.loads(endpoints.read_text())
        self.grpc_port, self.http_port = data["grpc_port"], data["http_port"]
        self.token = (self.master_dir / "join-token").read_text().strip()
        self.api_token = (self.master_dir / "api-token").read_text().strip()

    # ---- several masters on one PostgreSQL journal -------------------------------------

    @staticmethod
    def master_host(index: int) -> str:
        return f"127.0.0.{index + 1}"

    def master_name(self, index: int) -> str:
        return f"master-{index}"

    @property
    def master_ips(self) -> str:
        """What clients and agents are given: ``127.0.0.1,127.0.0.2,...`` (one port for all)."""
        return ",".join(self.master_host(i) for i in range(self.masters))

    def start_masters(self, count: int, journal: str, timeout: float = 60.0) -> int:
        """Starts ``count`` masters sharing ``journal`` (a postgresql:// URL), each a standby
        until elected; waits for their ports and for a leader. Returns the leader's index."""
        self.masters, self.journal = count, journal
        hosts = [self.master_host(i) for i in range(count)]
        if not self.grpc_port:
            self.grpc_port = free_port_on(*hosts)
        while not self.http_port or self.http_port == self.grpc_port:
            self.http_port = free_port_on(*hosts)
        for index in range(count):
            self.start_one_master(index, timeout)
        return self.wait_for_leader(timeout)

    def start_one_master(self, index: int, timeout: float = 60.0) -> None:
        """Starts (or restarts) master ``index``; waits until it serves its ports (as a
        standby or as the leader)."""
        name, host = self.master_name(index), self.master_host(index)
        data = self.root / name
        endpoints = data / "endpoints.json"
        with contextlib.suppress(FileNotFoundError):
            endpoints.unlink()
        self._spawn(
            name,
            [
                "master",
                "--bind",
                host,
                "--advertise",
                host,
                "--port",
                str(self.grpc_port),
                "--http-port",
                str(self.http_port),
                "--data-dir",
                str(data),
                "--journal",
                self.journal,
                "--strategy",
                self.strategy,
                "--log-level",
                self.log_level,
                *self.extra_master_args,
                *self.tls_args("master"),
                *(["--tls-require-client-cert"] if self.tls_dir else []),
            ],
        )
        deadline = time.monotonic() + timeout
        while not endpoints.exists():
            self._check_alive(name)
            if time.monotonic() > deadline:
                raise TransportError(f"{name} did not start in time")
            time.sleep(0.05)

    def master_role(self, index: int) -> str:
        """ "leader", "standby", or "down" (not running, or not answering its health check)."""
        proc = self.procs.get(self.master_name(index))
        if proc is None or proc.poll() is not None:
            return "down"
        try:
            response = httpx.get(
                f"{self.master_url(self.master_host(index))}/healthz",
                timeout=2,
                verify=self.http_verify(),
            )
            return str(response.json().get("role", "down"))
        except (httpx.HTTPError, ValueError):
            return "down"

    def leader(self) -> int | None:
        """The index of the master whose health check says it leads (None: none now)."""
        for index in range(self.masters):
            if self.master_role(index) == "leader":
                return index
        return None

    def wait_for_leader(self, timeout: float = 60.0, other_than: int | None = None) -> int:
        """Waits until a master (not ``other_than``) leads; the cluster's own calls and the
        tokens then come from it. Returns its index."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader()
            if index is not None and index != other_than:
                self.host = self.master_host(index)
                data = self.root / self.master_name(index)
                self.token = (data / "join-token").read_text().strip()
                self.api_token = (data / "api-token").read_text().strip()
                return index
            if time.monotonic() > deadline:
                raise TransportError(f"no master led within {timeout} s")
            time.sleep(0.1)

    def kill_master(self, index: int, sig: int = signal.SIGKILL) -> None:
        self.kill(self.master_name(index), sig)

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
                self.master_ips if self.masters > 1 else self.host,  # it follows the leader
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
                if not name.startswith("master-"):  # one of several masters may be down
                    self._check_alive(name)
            try:
                online = [d for d in self.devices() if d["state"] == "online"]
            except httpx.TransportError:  # a master elected a moment ago binds its ports now
                online = []
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
        masters = [n for n in self.procs if n == "master" or n.startswith("master-")]
        order = [n for n in self.procs if n not in masters] + masters
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


def free_port_on(*hosts: str) -> int:
    """A port free on every one of ``hosts`` (several masters share their port numbers; a
    throwaway PostgreSQL takes one on loopback)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((hosts[0], 0))
            port = int(first.getsockname()[1])
            try:
                for host in hosts[1:]:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise TransportError(f"no port free on all of {', '.join(hosts)}")
