"""What the process benchmarks submit: synthetic document pages (the demo's) and a small JPEG,
and whether this edgesched has the fast no-op path."""

from __future__ import annotations

import io


def page_pictures(count: int, width: int, seed: int = 7) -> list[bytes]:
    """``count`` synthetic document pages (the demo's), ``width`` pixels wide, as JPEG."""
    from edgesched.tools.demo.pages import generate_page, page_seed

    height = round(width * 1754 / 1240)
    out = []
    for index in range(1, count + 1):
        image, _ = generate_page(page_seed(seed, index), width, height)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def small_jpeg(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A 64×48 JPEG of one colour (each benchmark keeps the colour it always had)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, "JPEG")
    return buffer.getvalue()


def noop_available() -> bool:
    """The ``noop`` backend and the raw ``echo`` task type exist in this edgesched."""
    from edgesched.agent.backends import BACKENDS
    from edgesched.config import Settings

    echo = Settings().tasktypes.get("echo")
    return "noop" in BACKENDS and echo is not None and echo.kind == "raw"
