"""Decode an uploaded picture safely.

Pictures come from clients and are untrusted. Only a few common formats are parsed (EPS, for
one, would start Ghostscript), the pixel count is checked from the header before anything is
decoded, and every decoder failure becomes a :class:`BadInputError` with a short reason.

The format plugins are called directly rather than through ``Image.open`` so that the size limit
is ours alone: ``Image.open`` also applies Pillow's process-wide ``MAX_IMAGE_PIXELS``, which may
warn or raise before our own check can name the size, and which other code may change.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import IO

from PIL import Image, ImageFile

from edgesched.errors import BadInputError, ImageTooLargeError

__all__ = ["DEFAULT_MAX_PIXELS", "SUPPORTED_FORMATS", "decode_image", "sniff_image_header"]

DEFAULT_MAX_PIXELS = 50_000_000
# The seed's detector accepts .jpg .jpeg .png .bmp .tif .tiff; GIF and WebP are common enough.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "WEBP")

# Errors Pillow's decoders raise for bad bytes (the same set Image.open treats as "not this
# format", plus what load() raises on truncated or corrupt data).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
)


@lru_cache(maxsize=1)
def _openers() -> tuple[
    tuple[
        str,
        Callable[[IO[bytes], str | bytes], ImageFile.ImageFile],
        Callable[[bytes], bool | str] | None,
    ],
    ...,
]:
    Image.init()  # registers every plugin Pillow has; the ones we want may live outside preinit
    found = []
    for fmt in SUPPORTED_FORMATS:
        entry = Image.OPEN.get(fmt)
        if entry is not None:  # WebP is optional in some Pillow builds
            found.append((fmt, entry[0], entry[1]))
    return tuple(found)


def _describe_prefix(data: bytes) -> str:
    return f"starts with {data[:8]!r}; supported: {', '.join(f for f, _, _ in _openers())}"


def _open_header(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Parse only the header of ``data`` and check its size; raises BadInputError."""
    if not data:
        raise BadInputError("empty picture")
    prefix = data[:16]
    header_error = ""
    for fmt, factory, accept in _openers():
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            image = factory(io.BytesIO(data), "")
        except _DECODE_ERRORS as exc:
            # Like Image.open, try the other formats, but report the first whose magic matched.
            header_error = header_error or f"{fmt}: {exc}"
            continue
        _check_size(image, max_pixels)
        return image
    if header_error:
        raise BadInputError(f"truncated or corrupt image: {header_error}")
    raise BadInputError(f"not a recognised image: {_describe_prefix(data)}")


def _check_size(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadInputError(f"image has no pixels: {width}×{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image too large: {width}×{height} pixels exceeds the limit of {max_pixels}"
        )


def sniff_image_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Return ``(format, width, height)`` from the header alone, without decoding pixels.

    Cheap enough for the master to check every upload; raises BadInputError like
    :func:`decode_image` for empty, unrecognised, zero-sized or too large pictures.
    """
    image = _open_header(data, max_pixels)
    try:
        width, height = image.size
        return str(image.format), width, height
    finally:
        image.close()


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` into a fully loaded RGB image; raises BadInputError with a short reason."""
    image = _open_header(data, max_pixels)
    try:
        # load() now, so that a truncated file fails here and not in the middle of inference.
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise BadInputError(f"truncated or corrupt image: {exc}") from None
    try:
        if image.mode == "RGB":
            return image
        source: Image.Image = image
        if image.mode == "P" and "transparency" in image.info:
            # Pillow warns when a palette with transparency goes straight to RGB.
            source = image.convert("RGBA")
        return source.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise BadInputError(f"unsupported image mode {image.mode}: {exc}") from None
