"""The client's batching decisions (``client.batches.take_batch``): a batch is whatever is
ready, capped by count and bytes, never empty, never waiting."""

from __future__ import annotations

from collections import deque

from edgesched.client.batches import MAX_BYTES, MAX_COUNT, request_size, take_batch
from edgesched.wire import tasks


def test_a_lone_item_goes_alone_at_once() -> None:
    ready = deque([10])
    assert take_batch(ready, int) == [10]
    assert not ready


def test_everything_ready_goes_together_in_order() -> None:
    ready = deque(range(1, 101))
    assert take_batch(ready, lambda _: 1) == list(range(1, 101))


def test_the_count_caps_a_batch_and_the_rest_waits_in_order() -> None:
    ready = deque(range(10))
    assert take_batch(ready, lambda _: 1, max_count=4) == [0, 1, 2, 3]
    assert list(ready) == [4, 5, 6, 7, 8, 9]


def test_the_bytes_cap_a_batch_but_an_oversized_item_still_travels_alone() -> None:
    ready = deque([300, 300, 500, 2000, 10])
    assert take_batch(ready, int, max_bytes=1000) == [300, 300]
    assert take_batch(ready, int, max_bytes=1000) == [500]
    assert take_batch(ready, int, max_bytes=1000) == [2000]
    assert take_batch(ready, int, max_bytes=1000) == [10]


def test_the_default_caps_keep_a_message_under_the_limits() -> None:
    request = tasks.submit_request(
        client_id="c", idempotency_key="k", task_type="t", filename="f", payload=b"x" * 100_000
    )
    ready = deque([request] * 100)
    batch = take_batch(ready, request_size)
    assert len(batch) < 100
    assert sum(request_size(r) for r in batch) <= MAX_BYTES
    assert MAX_COUNT <= 1024  # the master refuses items beyond its own 1024
    big = tasks.submit_batch(batch)
    assert big.ByteSize() <= MAX_BYTES + 16 * len(batch)  # repeated-field framing only
