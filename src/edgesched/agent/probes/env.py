"""The machine as the probes see it: files, executables and child processes, optionally under a
fake root (``--sysroot``), so every probe runs end to end in tests without the board.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

#: Where vendor tools live besides PATH: npu-smi sits in /usr/local/sbin, which a non-root
#: PATH often lacks (devices.md §1.2). Under a sysroot, ``bin/`` comes first.
BIN_DIRS = ("bin", "usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin")


class ProbeError(RuntimeError):
    """A probe could not read its source (missing tool, permission, timeout, unparsable output)."""


class ProbeTimeout(ProbeError):
    """A tool did not answer in time (or was killed): asking it something else is pointless."""


def _child_environ() -> dict[str, str]:
    # C locale: the parsers expect '.' decimals and English field names.
    environ = dict(os.environ)
    environ["LC_ALL"] = "C"
    environ["LANG"] = "C"
    return environ


class ProbeEnv:
    """Reads files and runs tools of the machine, or of a fake root when ``sysroot`` is given.

    With a sysroot the environment is hermetic: executables are looked up only inside it, so a
    real ``nvidia-smi`` on the host can never leak into a fake RK3588.
    """

    def __init__(self, sysroot: str | os.PathLike[str] | None = None) -> None:
        self.sysroot = Path(sysroot).resolve() if sysroot is not None else None
        self._children: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"ProbeEnv(sysroot={str(self.sysroot) if self.sysroot else None!r})"

    def path(self, path: str) -> Path:
        """Where a machine path lives on disk: under the sysroot when one is given."""
        if self.sysroot is None:
            return Path(path)
        return self.sysroot / path.lstrip("/")

    def read_text(self, path: str) -> str:
        """The file's text; raises OSError (missing, permission denied on debugfs, ...)."""
        return self.path(path).read_text(encoding="utf-8", errors="replace")

    def read_optional(self, path: str) -> str | None:
        try:
            return self.read_text(path)
        except (OSError, ValueError):
            return None

    def exists(self, path: str) -> bool:
        return self.path(path).exists()

    def glob(self, pattern: str) -> list[str]:
        """Machine paths (without the sysroot prefix) matching an absolute pattern, sorted."""
        if self.sysroot is None:
            return sorted(glob.glob(pattern))
        root = str(self.sysroot)
        found = glob.glob(os.path.join(glob.escape(root), pattern.lstrip("/")))
        return sorted("/" + os.path.relpath(p, root) for p in found)

    def which(self, name: str) -> str | None:
        """The executable's real path; under a sysroot only its own bin dirs are searched."""
        if self.sysroot is None:
            found = shutil.which(name)
            if found:
                return found
            roots = [Path("/") / d for d in BIN_DIRS[1:]]
        else:
            roots = [self.sysroot / d for d in BIN_DIRS]
        for root in roots:
            candidate = root / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None

    def run(self, argv: Sequence[str], timeout: float) -> str:
        """Runs a tool to completion and returns its stdout; never longer than ``timeout``.

        The child gets its own process group so that a timeout kills the whole group: killing
        only a wrapper shell would leave a grandchild holding the pipe open.
        """
        proc = self._start(argv, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise ProbeTimeout(f"{argv[0]}: no answer within {timeout:g}s") from None
        finally:
            self._untrack(proc)
        if proc.returncode < 0:
            raise ProbeTimeout(f"{argv[0]}: killed by signal {-proc.returncode}")
        if proc.returncode != 0:
            detail = (err or out).strip().splitlines()[-1:] or [""]
            raise ProbeError(f"{argv[0]} exited {proc.returncode}: {detail[0][:200]}")
        return out

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Starts a long-lived streaming tool (tegrastats); ``close()`` ends it."""
        return self._start(argv, stderr=subprocess.DEVNULL, bufsize=1)

    def _start(self, argv: Sequence[str], stderr: int, bufsize: int = -1) -> subprocess.Popen[str]:
        """A tool found on the sysroot, in its own process group (a timeout or close() kills
        the whole group), tracked so that close() can end it."""
        exe = self.which(argv[0])
        if exe is None:
            raise ProbeError(f"{argv[0]}: not found")
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                errors="replace",
                bufsize=bufsize,
                start_new_session=True,
                env=_child_environ(),
            )
        except OSError as exc:
            raise ProbeError(f"{argv[0]}: {exc}") from exc
        self._track(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """Ends a child started by ``spawn`` (and its process group)."""
        self._kill(proc, drain=False)
        self._untrack(proc)

    def close(self) -> None:
        """Kills every child still running (a hung npu-smi, a tegrastats stream); starts none
        after that, so a call racing with shutdown cannot leave an orphan behind."""
        with self._lock:
            self._closed = True
            children = list(self._children)
            self._children.clear()
        for proc in children:
            # never drain here: the thread in run() (or a stream's reader) owns the pipes
            self._kill(proc, drain=False)

    def _track(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._children.add(proc)
        if closed:
            self._kill(proc)  # nobody reads its pipes yet: drain them here
            raise ProbeError(f"{proc.args!r}: environment closed")

    def _untrack(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._children.discard(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[str], drain: bool = True) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
        if not drain:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)
            return
        try:
            proc.communicate(timeout=2.0)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            # A grandchild that left the group still holds the pipe: stop waiting for it.
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
