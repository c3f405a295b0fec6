"""The payload log on its own (no event loop): append, read back, CRC, roll, oldest-first
reclaim, the scan at start, a torn tail, and a full disk (a real small tmpfs)."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesched.errors import DiskFullError, PayloadError
from edgesched.journal.base import TaskRow
from edgesched.master.payloadformat import parse_ref, row_of
from edgesched.master.payloadlog import PayloadLog


def row(task_id: str, key: str = "") -> TaskRow:
    return TaskRow(
        id=task_id,
        client_id="c",
        idem_key=key or task_id,
        task_type="raw",
        filename="x.bin",
        payload_path="",
        payload_size=0,
        submitted_ms=1,
    )


def commit_one(plog: PayloadLog, task_id: str, data: bytes, commit: int = 1) -> str:
    r = row(task_id)
    ref = plog.stage_task(r, data, commit)
    plog.before_commit()
    plog.committed()
    assert r.payload_path == ref
    return ref


def segments(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "payloads").glob("seg-*.log"))


def test_a_batch_is_one_write_and_reads_back(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    plog.open()
    rows = [row(f"t{i}") for i in range(3)]
    refs = [plog.stage_task(r, bytes([i]) * (100 + i), 7) for i, r in enumerate(rows)]
    assert segments(tmp_path) == ["seg-0000000000000001.log"]
    assert os.path.getsize(tmp_path / "payloads" / segments(tmp_path)[0]) == 0  # only staged
    plog.before_commit()
    plog.committed()
    for i, ref in enumerate(refs):
        assert plog.read(ref) == bytes([i]) * (100 + i)
        parsed = parse_ref(ref)
        assert parsed is not None and parsed.length == 100 + i
    folder = tmp_path / "payloads"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / segments(tmp_path)[0]).stat().st_mode) == 0o600
    plog.close()


def test_a_seed_upload_keeps_its_file_path(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    upload = tmp_path / "up.png"
    upload.write_bytes(b"picture")
    r = row("s1")
    r.payload_path = str(upload)
    plog.stage_task(r, None, 1)
    plog.flush()
    assert r.payload_path == str(upload)
    assert plog.read(r.payload_path) == b"picture"
    entries = PayloadLog(tmp_path).open()
    assert entries["s1"].record["payload_path"] == str(upload)


def test_a_crc_mismatch_and_a_missing_segment_are_payload_errors(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    ref = commit_one(plog, "t1", b"abcdef" * 10)
    parsed = parse_ref(ref)
    assert parsed is not None
    path = tmp_path / "payloads" / parsed.segment
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - 1)
        handle.write(b"Z")
    with pytest.raises(PayloadError, match="CRC"):
        plog.read(ref)
    assert not plog.present(ref)
    with pytest.raises(PayloadError, match="seg-0000000000000009"):
        plog.read("payloads/seg-0000000000000009.log@0+3")
    with pytest.raises(PayloadError):
        plog.read(str(tmp_path / "no-such-file"))


def test_a_discarded_batch_leaves_nothing_and_ends_stay_staged(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    commit_one(plog, "t1", b"one")
    size = os.path.getsize(tmp_path / "payloads" / segments(tmp_path)[0])
    plog.release(["t1"])
    plog.stage_task(row("t2"), b"two", 2)
    plog.before_commit()  # written, then the journal's COMMIT fails
    plog.discard()
    assert os.path.getsize(tmp_path / "payloads" / segments(tmp_path)[0]) == size
    ref = plog.stage_task(row("t3"), b"three", 2)  # the redo: where t2 would have been
    plog.before_commit()
    plog.committed()
    assert plog.read(ref) == b"three"
    plog.close()
    live = PayloadLog(tmp_path).open()
    assert set(live) == {"t3"}  # t1's end entry went with the next write, t2 never was


def test_segments_roll_and_are_deleted_oldest_first(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path, segment_mb=1 / 1024)  # 1 KiB segments
    for i in range(4):
        commit_one(plog, f"t{i}", b"x" * 1500, i + 1)  # one entry per segment
    assert len(segments(tmp_path)) == 4
    plog.release(["t1"])  # the second segment is empty but the first is not: both stay
    assert len(segments(tmp_path)) == 4
    plog.release(["t0"])
    assert segments(tmp_path) == ["seg-0000000000000003.log", "seg-0000000000000004.log"]
    plog.release(["t2", "t3"])  # the active segment is never deleted
    assert segments(tmp_path) == ["seg-0000000000000004.log"]
    plog.close()
    assert PayloadLog(tmp_path).open() == {}


def test_the_scan_at_start_finds_live_entries_and_their_commits(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    for i in range(5):
        commit_one(plog, f"t{i}", b"p" * i, 10 + i)
    plog.release(["t1", "t3"])
    plog.close()
    again = PayloadLog(tmp_path)
    live = again.open()
    assert set(live) == {"t0", "t2", "t4"}
    assert live["t4"].commit == 14
    restored = row_of(live["t2"].record)
    assert restored is not None and restored.id == "t2"
    assert again.read(restored.payload_path) == b"pp"
    ref = commit_one(again, "t5", b"after", 20)  # appends after what was there
    assert again.read(ref) == b"after" and again.read(restored.payload_path) == b"pp"


def test_a_torn_tail_is_cut_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plog = PayloadLog(tmp_path)
    ref = commit_one(plog, "t1", b"kept", 1)
    torn = parse_ref(commit_one(plog, "t2", b"torn" * 100, 2))
    plog.close()
    assert torn is not None
    path = tmp_path / "payloads" / segments(tmp_path)[0]
    os.truncate(path, os.path.getsize(path) - 50)  # a crash in the middle of t2's write
    again = PayloadLog(tmp_path)
    live = again.open()
    assert set(live) == {"t1"}
    assert "torn entry" in caplog.text
    assert os.path.getsize(path) == torn.offset  # cut back to the last whole entry
    assert again.read(ref) == b"kept"
    after = commit_one(again, "t3", b"next", 3)
    assert again.read(after) == b"next"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the full-disk case needs root (a small tmpfs); CI runs as root")
        pytest.skip("the full-disk case needs root to mount a small tmpfs")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_fails_the_batch_and_cuts_back(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        plog = PayloadLog(mount)
        ref = commit_one(plog, "t1", b"first", 1)
        path = mount / "payloads" / segments(mount)[0]
        size = os.path.getsize(path)
        for i in range(4):
            plog.stage_task(row(f"big{i}"), b"y" * 400_000, 2)
        with pytest.raises(DiskFullError, match="no space left"):
            plog.before_commit()
        plog.discard()
        assert os.path.getsize(path) == size  # no half entry left counted
        ref2 = commit_one(plog, "t2", b"second", 3)  # space enough for a small one
        assert plog.read(ref) == b"first" and plog.read(ref2) == b"second"
        plog.close()
        assert set(PayloadLog(mount).open()) == {"t1", "t2"}


def test_damage_in_an_older_segment_is_reported_not_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plog = PayloadLog(tmp_path, segment_mb=1 / 1024)
    for i in range(3):
        commit_one(plog, f"t{i}", b"z" * 1500, i + 1)  # one entry per segment
    plog.close()
    first = tmp_path / "payloads" / segments(tmp_path)[0]
    size = os.path.getsize(first)
    with open(first, "r+b") as handle:  # its magic, as a bad disk would
        handle.write(b"XXXX")
    again = PayloadLog(tmp_path)
    live = again.open()
    assert set(live) == {"t1", "t2"}
    assert "is damaged at byte 0" in caplog.text
    assert os.path.getsize(first) == size  # kept for an operator, not cut
    again.release(["t1", "t2"])
    assert len(segments(tmp_path)) == 3  # nothing after the damage is deleted either


def test_an_entry_taken_back_is_not_written(tmp_path: Path) -> None:
    plog = PayloadLog(tmp_path)
    kept = plog.stage_task(row("t1"), b"kept", 1)
    plog.stage_task(row("t2"), b"repeat", 1)
    plog.unstage("t2")  # its row was not inserted (a repeated key)
    later = plog.stage_task(row("t3"), b"later", 1)
    plog.before_commit()
    plog.committed()
    assert plog.read(kept) == b"kept" and plog.read(later) == b"later"
    assert set(plog.where) == {"t1", "t3"}
    plog.close()
    assert set(PayloadLog(tmp_path).open()) == {"t1", "t3"}
