"""What makes sure a cluster of processes is stopped however a run is left: SIGTERM raised as
SystemExit so ``finally`` blocks run, a cleanup that a second Ctrl-C cannot cut short, a working
directory that is removed unless kept, and a cluster started with its agents joined."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from edgesched.tools.testing.process_cluster import LocalCluster


@contextlib.contextmanager
def signals_as_exit() -> Iterator[None]:
    """SIGTERM (a supervisor, ``timeout``) raises SystemExit in the main thread, so ``finally``
    blocks run and stop the processes we started; Ctrl-C raises KeyboardInterrupt anyway."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_cluster(cluster: LocalCluster) -> None:
    """Stops every process of ``cluster``; a second Ctrl-C cannot cut the cleanup short."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        cluster.stop()
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        cluster.stop()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@contextlib.contextmanager
def local_cluster(root: Path, log_level: str = "warning") -> Iterator[LocalCluster]:
    """A LocalCluster whose processes are all stopped on the way out, however it is left."""
    cluster = LocalCluster(root=root, log_level=log_level)
    with signals_as_exit():
        try:
            yield cluster
        finally:
            stop_cluster(cluster)


@contextlib.contextmanager
def work_dir(path: Path | None, keep: bool) -> Iterator[Path]:
    """``path`` (created, kept) or a fresh temporary directory (removed unless ``keep``)."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    made = Path(tempfile.mkdtemp(prefix="edgesched-bench-"))
    try:
        yield made
    finally:
        if not keep:
            shutil.rmtree(made, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(
    agents: list[list[str]],
    master_args: list[str] | None = None,
    root: Path | None = None,
    strategy: str = "load",
) -> Iterator[LocalCluster]:
    """A master and one agent per argument list, on loopback, stopped however it is left
    (SIGTERM included; see :func:`local_cluster`)."""
    with work_dir(root, keep=False) as where, local_cluster(where) as c:
        c.strategy = strategy
        c.extra_master_args = master_args or []
        c.start_master()
        for i, args in enumerate(agents):
            c.start_agent(f"agent-{i + 1}", args)
        c.wait_for_devices(len(agents))
        yield c
