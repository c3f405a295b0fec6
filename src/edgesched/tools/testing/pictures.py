"""Small pictures to submit: real PNGs, so the master's sniffing and the agents' decoders see
what a client would send."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()
