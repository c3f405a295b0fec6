"""File-drop backend: an external engine (a vendor container) does the inference.

The agent writes ``<input>/<task>.<ext>`` (as ``.part``, then renamed, so the engine never reads
half a picture) and waits for ``<output>/label/<task>.txt`` (the label) or ``<task>.err`` (a
reason: the engine refused the picture). A result counts once it is *complete*: renamed into
place, or closed by every writer. watchfiles (inotify on Linux) reports it within tens of
milliseconds; a scan of the waiting task's own files every ``interval_s`` is the fallback, for
file systems without events, events lost, or watchfiles not installed (it needs Python ≥ 3.10).

watchfiles reports "added" for a rename and for a file opened in place alike, and never reports
close. Whether anyone still has the file open for writing is asked of the kernel with a read
lease (Linux ``F_SETLEASE`` fails while a writer holds the file); where leases are refused
(another owner without CAP_LEASE, other systems), a file whose size and mtime stayed put for
``SETTLE_S`` counts as complete.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgesched.agent.backends.base import BackendResult, HeldArtefact
from edgesched.errors import BackendError, BadInputError, UnknownTaskTypeError
from edgesched.filenames import safe_component
from edgesched.inference.images import decode_image, sniff_image_header
from edgesched.inference.labels import parse_label

__all__ = ["SETTLE_S", "FileDropBackend"]

log = logging.getLogger(__name__)

LABEL_DIR = "label"
SETTLE_S = 0.25  #: unchanged this long counts as complete, where leases cannot tell
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "GIF": "gif"}
_PROBE = ".edgesched-watch-probe.txt"
_TICK_MS = 100  # re-check results seen while still open for writing this often
_PROBE_WAIT_S = 2.0
_F_SETLEASE = 1024  # Linux F_LINUX_SPECIFIC_BASE; older Pythons' fcntl lacks the name


def _import_watchfiles() -> Any:
    try:
        import watchfiles
    except ImportError:
        return None
    return watchfiles


def _writers_done(path: Path) -> bool | None:
    """True: no one has ``path`` open for writing; False: someone has; None: cannot tell."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False  # gone, or not readable yet
    try:
        setlease = getattr(fcntl, "F_SETLEASE", _F_SETLEASE)
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
        return True
    except OSError as exc:
        # EAGAIN/EBUSY: open for writing somewhere. EACCES/EPERM (not our file), EINVAL (the
        # file system has no leases): the lease cannot answer.
        return False if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    finally:
        os.close(fd)


class FileDropBackend:
    """Hands pictures to an external engine through two directories.

    Owns the two directories' files it writes and the watcher thread that sees labels arrive;
    it may not touch the engine's own files beyond reading a finished label."""

    name: str = "filedrop"
    formats: tuple[str, ...] = ("filedrop",)

    def __init__(
        self,
        task_types: Iterable[str],
        input_dir: str | Path,
        output_dir: str | Path,
        interval_s: float = 10.0,
        timeout_s: float = 300.0,
    ) -> None:
        self._task_types = sorted(set(task_types))
        self.input_dir = Path(input_dir)
        self.label_dir = Path(output_dir) / LABEL_DIR
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.label_dir.mkdir(parents=True, exist_ok=True)
        #: "watchfiles" once file-system events are seen to arrive, else "scan"
        self.mode = "scan"
        self._lock = threading.Lock()
        self._waiters: dict[str, threading.Event] = {}
        self._found: dict[str, Path] = {}
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}
        self._start_lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._probe_seen = threading.Event()
        self._thread: threading.Thread | None = None

    def artefacts(self) -> list[HeldArtefact]:
        # What the engine runs is its own business: the board offers the task types it serves.
        return [HeldArtefact(t, "filedrop", "", "", self.name) for t in self._task_types]

    def warm(self) -> None:
        self._ensure_watcher()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---- the one watcher thread ----------------------------------------------------------

    def _ensure_watcher(self) -> None:
        with self._start_lock:  # the first run starts it; the others wait until it listens
            if self._started:
                return
            self._started = True
            watchfiles = _import_watchfiles()
            if watchfiles is None:
                log.warning(
                    "watchfiles is not installed: results are found by a scan every "
                    "%g s (pip install watchfiles)",
                    self.interval_s,
                )
                return
            self._thread = threading.Thread(
                target=self._watch, args=(watchfiles,), name="filedrop-watch", daemon=True
            )
            self._thread.start()
            # Until inotify is set up, a result would be missed (and found only by the scan):
            # write a probe until the watcher reports it.
            probe = self.label_dir / _PROBE
            deadline = time.monotonic() + _PROBE_WAIT_S
            while not self._probe_seen.wait(0.02) and time.monotonic() < deadline:
                if not self._thread.is_alive():
                    break
                probe.write_text(str(time.monotonic()), encoding="ascii")
            probe.unlink(missing_ok=True)
            if self._probe_seen.is_set():
                self.mode = "watchfiles"
            else:
                log.warning(
                    "no file-system events on %s: results are found by a scan every %g s",
                    self.label_dir,
                    self.interval_s,
                )

    def _watch(self, watchfiles: Any) -> None:
        deleted = watchfiles.Change.deleted

        def wanted(change: Any, path: str) -> bool:
            return bool(change != deleted and path.endswith((".txt", ".err")))

        pending: set[str] = set()  # result files seen while a writer still had them open
        try:
            for changes in watchfiles.watch(
                self.label_dir,
                watch_filter=wanted,
                debounce=200,  # the longest a batch is held while results keep coming
                step=20,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                stop_event=self._stop,
            ):
                for _change, raw in changes:
                    filename = Path(raw).name
                    if filename == _PROBE:
                        self._probe_seen.set()
                    else:
                        pending.add(filename)
                pending = {f for f in pending if not self._offer(f)}
        except Exception as exc:  # e.g. the inotify watch limit: the scan carries on alone
            log.warning(
                "file-system events on %s stopped (%s); scanning every %g s",
                self.label_dir,
                exc,
                self.interval_s,
            )
            self.mode = "scan"

    def _offer(self, filename: str) -> bool:
        """Hand a result file to its waiting task; False while it is still being written."""
        name = filename.rsplit(".", 1)[0]
        with self._lock:
            if name not in self._waiters:
                return True  # no one waits (stale, or the task timed out): not ours to touch
        path = self.label_dir / filename
        if not self._complete(path):
            return False
        with self._lock:
            event = self._waiters.get(name)
            if event is not None:
                self._found[name] = path
                event.set()
        return True

    def _complete(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        verdict = _writers_done(path)
        if verdict is not None:
            return verdict
        signature, now = (st.st_size, st.st_mtime_ns), time.monotonic()
        with self._lock:
            seen = self._seen.get(path)
            if seen is None or seen[0] != signature:
                self._seen[path] = (signature, now)
                return False
            return now - seen[1] >= SETTLE_S

    # ---- one task ------------------------------------------------------------------------

    def _results(self, name: str) -> tuple[Path, Path]:
        return self.label_dir / f"{name}.txt", self.label_dir / f"{name}.err"

    def _register(self, task_id: str) -> tuple[str, threading.Event]:
        base = safe_component(task_id) if task_id else uuid.uuid4().hex
        with self._lock:
            name = base
            while name in self._waiters:  # the same task twice at once: keep their files apart
                name = f"{base}-{uuid.uuid4().hex[:8]}"
            event = threading.Event()
            self._waiters[name] = event
        for stale in self._results(name):  # what we return must answer this drop
            stale.unlink(missing_ok=True)
        return name, event

    def _unregister(self, name: str) -> None:
        with self._lock:
            self._waiters.pop(name, None)
            self._found.pop(name, None)
            for path in self._results(name):
                self._seen.pop(path, None)

    def _await(self, name: str, event: threading.Event, deadline: float) -> Path | None:
        seen_unfinished = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # The scan, every interval_s; sooner while a file seen is waiting to settle.
            event.wait(min(remaining, SETTLE_S if seen_unfinished else self.interval_s))
            with self._lock:
                event.clear()
                found = self._found.pop(name, None)
            if found is not None:
                return found
            seen_unfinished = False
            for path in self._results(name):
                if self._complete(path):
                    return path
                seen_unfinished = seen_unfinished or path.exists()

    def run(self, task_type: str, payload: bytes, task_id: str = "") -> BackendResult:
        """Hand the picture to the engine and wait for its label; ``task_id`` "" → a uuid."""
        if task_type not in self._task_types:
            raise UnknownTaskTypeError(task_type, self._task_types)
        t0 = time.perf_counter()
        fmt, _, _ = sniff_image_header(payload)
        decode_image(payload)  # a bad picture fails here, as with every other backend
        t1 = time.perf_counter()
        self._ensure_watcher()
        name, event = self._register(task_id)
        dropped = self.input_dir / f"{name}.{_EXTENSIONS.get(fmt, fmt.lower())}"
        part = dropped.with_name(dropped.name + ".part")
        try:
            part.write_bytes(payload)
            os.replace(part, dropped)  # atomic: the engine sees the whole picture or nothing
            found = self._await(name, event, time.monotonic() + self.timeout_s)
            if found is None:
                dropped.unlink(missing_ok=True)  # no one took it: do not leave work behind
                raise BackendError(
                    f"the external engine produced no result for {name} within {self.timeout_s:g} s"
                )
            t2 = time.perf_counter()
            text = found.read_text(encoding="utf-8", errors="replace")
        finally:
            part.unlink(missing_ok=True)
            self._unregister(name)
        # The result is ours now; the input stays the engine's to delete (it may still be at it).
        found.unlink(missing_ok=True)
        if found.suffix == ".err":
            reason = text.strip() or "no reason given"
            raise BadInputError(f"the external engine refused the picture: {reason}")
        try:
            detections = parse_label(text)
        except BadInputError as exc:  # the engine's fault, not the picture's
            raise BackendError(f"the external engine wrote a bad label for {name}: {exc}") from None
        t3 = time.perf_counter()
        return BackendResult(
            label=text,
            detections=detections,
            timings={
                "decode_ms": (t1 - t0) * 1000,
                "inference_ms": (t2 - t1) * 1000,
                "postprocess_ms": (t3 - t2) * 1000,
            },
        )
