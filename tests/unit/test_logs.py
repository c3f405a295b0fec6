"""Repeated identical log lines are rate-limited (a descriptor-starved accept loop once wrote
329 MB of the same line in a minute)."""

from __future__ import annotations

import logging

from edgesched.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, lineno: int = 10) -> logging.LogRecord:
    return logging.LogRecord("edgesched.x", logging.ERROR, "/src/x.py", lineno, msg, args, None)


def test_identical_lines_within_the_window_pass_once_and_the_next_window_counts_them():
    clock = Clock()
    limit = RepeatFilter(window_s=10.0, clock=clock)
    passed = []
    for step in range(100_000):
        clock.now = step * 0.0001  # 100,000 lines in 10 s
        line = record("accept failed: %s", "Too many open files")
        if limit.filter(line):
            passed.append(line.getMessage())
    clock.now = 10.0
    line = record("accept failed: %s", "Too many open files")
    assert limit.filter(line)
    assert passed == ["accept failed: Too many open files"]
    assert line.getMessage() == (
        "accept failed: Too many open files [99999 identical lines left out in the last 10 s]"
    )
    clock.now = 30.0  # quiet since: the next one passes as it is
    line = record("accept failed: %s", "Too many open files")
    assert limit.filter(line) and line.getMessage() == "accept failed: Too many open files"


def test_different_messages_or_places_are_not_rate_limited_together():
    limit = RepeatFilter(window_s=10.0, clock=Clock())
    assert limit.filter(record("task %s failed", "a"))
    assert limit.filter(record("task %s failed", "b"))
    assert limit.filter(record("task %s failed", "a", lineno=11))
    assert not limit.filter(record("task %s failed", "a"))


def test_the_filter_remembers_a_bounded_number_of_lines():
    clock = Clock()
    limit = RepeatFilter(window_s=10.0, clock=clock, max_keys=100)
    for n in range(1000):
        clock.now = n * 0.001
        assert limit.filter(record(f"line {n}"))
        assert len(limit._seen) <= 100


def test_setup_logging_installs_the_filter():
    from edgesched.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info")
        assert any(isinstance(f, RepeatFilter) for f in root.handlers[0].filters)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
