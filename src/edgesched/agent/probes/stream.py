"""One long-lived child process whose latest line is read on demand (tegrastats).

Spawning tegrastats per poll costs hundreds of ms and its first line only comes after one
interval (devices.md §3.1), so the probe keeps one child and a reader thread instead.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from edgesched.agent.probes.env import ProbeEnv, ProbeError


class LineStream:
    def __init__(
        self,
        env: ProbeEnv,
        argv: Sequence[str],
        accept: Callable[[str], bool],
        restart_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = env
        self.argv = list(argv)
        self.accept = accept
        self.restart_after_s = restart_after_s
        self.clock = clock
        self.starts = 0
        self.last_error: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._started_at: float | None = None
        self._line: str | None = None
        self._line_at: float | None = None
        self._lock = threading.Lock()
        self._got_line = threading.Event()
        self._closed = False

    def ensure_running(self) -> bool:
        """Starts the child, or restarts it once it has died and the back-off has passed."""
        with self._lock:
            if self._closed:
                return False
            if self._proc is not None and self._proc.poll() is None:
                return True
            now = self.clock()
            if self._started_at is not None and now - self._started_at < self.restart_after_s:
                return False  # a tool that keeps dying must not be respawned in a tight loop
            self._started_at = now
            try:
                proc = self.env.spawn(self.argv)
            except ProbeError as exc:
                self.last_error = str(exc)
                return False
            self._proc = proc
            self.starts += 1
        reader = threading.Thread(
            target=self._read, args=(proc,), name=f"stream-{self.argv[0]}", daemon=True
        )
        reader.start()
        return True

    def _read(self, proc: subprocess.Popen[str]) -> None:
        stdout = proc.stdout
        if stdout is None:
            return
        try:
            for line in stdout:
                if self.accept(line):
                    with self._lock:
                        self._line, self._line_at = line.rstrip("\n"), self.clock()
                    self._got_line.set()
        except (OSError, ValueError):
            pass  # the pipe was closed under us by close()
        stdout.close()
        code = proc.wait()
        with self._lock:
            if not self._closed:
                self.last_error = f"{self.argv[0]} exited {code}"

    def latest(self) -> tuple[str | None, float | None]:
        """The newest accepted line and its age in seconds (None, None before the first)."""
        with self._lock:
            if self._line is None or self._line_at is None:
                return None, None
            return self._line, self.clock() - self._line_at

    def wait_first(self, timeout_s: float) -> bool:
        return self._got_line.wait(timeout_s)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            self.env.stop(proc)
