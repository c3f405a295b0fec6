"""Decoding untrusted pictures: every failure is a BadInputError with a readable reason."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from edgesched.errors import BadInputError
from edgesched.inference.images import decode_image, sniff_image_header


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def noisy_jpeg(width: int = 320, height: int = 240) -> bytes:
    rng = random.Random(4)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    return encode(image, "JPEG", quality=90)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width``×``height``, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decodes_jpeg_to_loaded_rgb() -> None:
    image = decode_image(noisy_jpeg())
    assert image.mode == "RGB"
    assert image.size == (320, 240)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "LA", "CMYK"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert decode_image(encode(Image.new(mode, (7, 5)), fmt)).mode == "RGB"


def test_palette_with_transparency_becomes_rgb_without_warning() -> None:
    # pytest turns warnings into errors here, so a Pillow warning would fail this test.
    data = encode(Image.new("P", (4, 4)), "PNG", transparency=0)
    assert decode_image(data).mode == "RGB"


def test_sniff_reads_format_and_size() -> None:
    assert sniff_image_header(noisy_jpeg(64, 48)) == ("JPEG", 64, 48)
    assert sniff_image_header(encode(Image.new("RGB", (3, 9)), "PNG")) == ("PNG", 3, 9)


@pytest.mark.parametrize("read", [decode_image, sniff_image_header])
def test_empty_bytes(read: object) -> None:
    assert callable(read)
    with pytest.raises(BadInputError, match=r"^empty picture$"):
        read(b"")


@pytest.mark.parametrize("read", [decode_image, sniff_image_header])
def test_not_an_image(read: object) -> None:
    assert callable(read)
    with pytest.raises(BadInputError, match=r"^not a recognised image: "):
        read(b"GIF? no, just some text that is long enough")


def test_formats_outside_the_list_are_refused() -> None:
    # PPM is a perfectly good image, but only the listed formats' parsers see untrusted bytes.
    with pytest.raises(BadInputError, match="not a recognised image"):
        decode_image(encode(Image.new("RGB", (4, 4)), "PPM"))


def test_truncated_jpeg_fails_at_decode_not_later() -> None:
    data = noisy_jpeg()
    truncated = data[: len(data) // 2]
    assert sniff_image_header(truncated) == ("JPEG", 320, 240)  # the header is intact
    with pytest.raises(BadInputError, match=r"^truncated or corrupt image: "):
        decode_image(truncated)


def test_corrupt_png_data() -> None:
    data = bytearray(encode(Image.new("RGB", (50, 50), "red"), "PNG"))
    data[60:70] = b"\xff" * 10  # inside the compressed IDAT stream
    with pytest.raises(BadInputError, match=r"^truncated or corrupt image: "):
        decode_image(bytes(data))


def test_header_cut_short() -> None:
    with pytest.raises(BadInputError, match="truncated or corrupt image"):
        decode_image(noisy_jpeg()[:20])


@pytest.mark.parametrize(("width", "height"), [(0, 0), (0, 5), (5, 0)])
def test_zero_sized_image(width: int, height: int) -> None:
    data = png_header_only(width, height)
    with pytest.raises(BadInputError):
        decode_image(data)
    with pytest.raises(BadInputError):
        sniff_image_header(data)


@pytest.mark.parametrize("read", [decode_image, sniff_image_header])
@pytest.mark.parametrize("pil_limit", [None, 89_478_485, 10])
def test_decompression_bomb_is_refused_from_the_header(
    read: object, pil_limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our limit holds whatever Pillow's global limit is: off, default, or tiny.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    data = png_header_only(100_000, 100_000)
    assert len(data) < 100
    assert callable(read)
    with pytest.raises(BadInputError) as info:
        read(data)
    assert str(info.value) == (
        "image too large: 100000×100000 pixels exceeds the limit of 50000000"
    )


def test_own_pixel_limit() -> None:
    data = noisy_jpeg(64, 48)
    assert decode_image(data, max_pixels=64 * 48).size == (64, 48)
    with pytest.raises(BadInputError, match="64×48 pixels exceeds the limit of 3071"):
        decode_image(data, max_pixels=64 * 48 - 1)
    with pytest.raises(BadInputError, match="image too large"):
        sniff_image_header(data, max_pixels=100)
