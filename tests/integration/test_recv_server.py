"""`edgesched client recv`: the seed's /recv_rst receiver, golden replies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgesched.client.compat.receiver import ReceiverServer


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    server = ReceiverServer(("127.0.0.1", 0), tmp_path / "rst")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "rst"
    server.shutdown()
    server.server_close()


def test_a_file_part_is_saved_under_its_base_name_and_overwritten(receiver) -> None:
    url, directory = receiver
    for content in (b"0 1 2 3 4 0.5\n", b"1 1 2 3 4 0.9\n"):
        response = httpx.post(
            f"{url}/recv_rst", files={"file": ("10.0.0.1_3.txt", content)}, data={"service": "x"}
        )
        assert (response.status_code, response.text) == (200, "File received")
    assert (directory / "10.0.0.1_3.txt").read_bytes() == b"1 1 2 3 4 0.9\n"


@pytest.mark.parametrize("name", ["..", ".", "../escape.txt", "a/b.txt", "a\\b.txt", ""])
def test_dangerous_names_are_refused(receiver, name: str) -> None:
    url, directory = receiver
    response = httpx.post(f"{url}/recv_rst", files={"file": (name, b"x")})
    assert response.status_code == 400
    assert list(directory.iterdir()) == []


def test_other_paths_and_bodies_are_refused(receiver) -> None:
    url, _ = receiver
    assert httpx.post(f"{url}/other", files={"file": ("a.txt", b"x")}).status_code == 404
    assert httpx.get(f"{url}/recv_rst").text == "404 Not Found"
    assert httpx.post(f"{url}/recv_rst", content=b"plain").status_code == 400
    no_file = httpx.post(f"{url}/recv_rst", files={"other": ("a.txt", b"x")})
    assert no_file.status_code == 400
