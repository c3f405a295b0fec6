"""A throwaway PostgreSQL server for tests, chaos runs and benchmarks: Debian's ``postgresql``
package (``make deps-system`` installs it), ``initdb`` into a temporary folder, one server on a
free loopback port, removed on ``close``.

PostgreSQL refuses to run as root: when we are root the folder is handed to an unprivileged user
(``postgres``, which the Debian package creates, else ``nobody``) and every server program runs
as that user. Nothing is mocked; nothing is reached but 127.0.0.1 and a socket in the folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edgesched.tools.testing.process_cluster import free_port_on

#: where Debian puts the server's programs (not on PATH); the newest version is taken
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
USER = "edgesched"  #: the database superuser initdb creates (trust auth on loopback only)
START_TIMEOUT_S = 60


class PgUnavailable(RuntimeError):
    """No PostgreSQL server programs here (or they cannot run)."""


def find_binaries() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$EDGESCHED_PG_BIN``, the
    newest ``/usr/lib/postgresql/<version>/bin``, or the one ``pg_ctl`` on PATH lives in."""
    configured = os.environ.get("EDGESCHED_PG_BIN", "")
    candidates = [configured] if configured else []
    candidates += sorted(
        glob.glob(DEBIAN_BINARIES), key=lambda p: int(Path(p).parent.name or 0), reverse=True
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PgUnavailable(
        "no PostgreSQL server programs (initdb, pg_ctl, postgres) found in "
        f"{DEBIAN_BINARIES} or on PATH: run `make deps-system` (as root) to install "
        "Debian's postgresql package"
    )


def available() -> str:
    """ "" when a throwaway server can be started here, else why not."""
    try:
        find_binaries()
    except PgUnavailable as exc:
        return str(exc)
    if os.geteuid() == 0 and _unprivileged() is None:
        return "running as root and no unprivileged user (postgres, nobody) to run PostgreSQL"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root and no setpriv (util-linux) to run PostgreSQL as another user"
    return ""


def _unprivileged() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


class PgServer:
    """One throwaway server. ``start()`` runs initdb (once) and the server; ``dsn(database)``
    is how to reach it; ``restart()``, ``stop()`` and ``kill()`` are for failure tests;
    ``create_database()`` gives each test its own database; ``close()`` stops it and removes
    the folder. ``durable=False`` turns fsync off (tests: faster, nothing survives a power
    cut — which no test makes); benchmarks keep the default (on). A ``root`` of one's own must be
    reachable by the server's user when we are root (not inside a 0700 folder of root's)."""

    def __init__(
        self, root: Path | None = None, durable: bool = True, host: str = "127.0.0.1"
    ) -> None:
        self.bin = find_binaries()
        self.host = host
        self.durable = durable
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="edgesched-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = 0
        self._user = _unprivileged() if os.geteuid() == 0 else None
        self._databases = 0

    # ---- running the server's programs -------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._user is not None:
            # setpriv (util-linux) switches the user, not subprocess's user=/group=: those make
            # Python fork() instead of vfork(), and in a process running gRPC threads (chaos,
            # the benchmarks) gRPC's fork handlers then abort the child
            command = [
                "setpriv",
                f"--reuid={self._user.pw_uid}",
                f"--regid={self._user.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        return subprocess.run(
            command,
            check=check,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            cwd=self.root,
        )

    def _prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        if (self.data / "PG_VERSION").exists():
            return
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        except subprocess.CalledProcessError as exc:
            raise PgUnavailable(f"initdb failed: {exc.stderr.strip() or exc}") from exc

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> PgServer:
        """Starts the server (initdb first, once); the port stays the same across restarts."""
        self._prepare()
        if not self.port:
            self.port = free_port_on(self.host)
        options = [
            f"-p {self.port}",
            f"-k {self.root}",  # the Unix socket in our folder, not /var/run/postgresql
            f"-c listen_addresses={self.host}",
            "-c max_connections=200",
            "-c shared_buffers=64MB",
            f"-c fsync={'on' if self.durable else 'off'}",
            "-c full_page_writes=" + ("on" if self.durable else "off"),
        ]
        try:
            self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                " ".join(options),
                "start",
            )
        except subprocess.CalledProcessError as exc:
            raise PgUnavailable(
                f"PostgreSQL did not start: {exc.stderr.strip() or exc}; log: {self.log_tail()}"
            ) from exc
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``fast``: connections cut, a clean shutdown; ``immediate``: as a
        crash, recovery at the next start)."""
        if self._running():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILLs the postmaster (its backends end when they notice)."""
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            deadline = time.monotonic() + 30
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart(self, mode: str = "fast") -> None:
        """Stops and starts again on the same port, the data kept."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what a client needs -----------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        """``postgresql://edgesched@127.0.0.1:<port>/<database>`` (trust auth: no password)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str = "") -> str:
        """A new, empty database; returns its DSN."""
        self._databases += 1
        name = name or f"t{os.getpid()}_{self._databases}"
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def psql(self, database: str, sql: str) -> str:
        """Runs ``sql`` with psql (as the superuser, over the folder's socket); its output."""
        psql = self.bin / "psql"
        program = str(psql) if psql.exists() else (shutil.which("psql") or "psql")
        done = self._run(
            program,
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )
        return done.stdout

    def pid(self) -> int:
        """The postmaster's pid (0 when not running)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _running(self) -> bool:
        pid = self.pid()
        return bool(pid) and self._alive(pid)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
