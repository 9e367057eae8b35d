"""Image sizes read from real file headers, and the token bound every provider stays under."""

from __future__ import annotations

import base64
import math
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ralex.media import ImageError, data_url_image_size, image_size, image_tokens_bound

# --- tiny images, built in memory -------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """An RGB PNG; ``pixels=False`` leaves out the image data (for sizes too big to build)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    if pixels:
        rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
        out += _png_chunk(b"IDAT", zlib.compress(rows))
    return out + _png_chunk(b"IEND", b"")


def gif(width: int, height: int, *, pixels: bool = True) -> bytes:
    """A two-colour GIF89a; its LZW data resets the code table every two pixels (3-bit codes).
    ``pixels=False`` leaves out the image (for sizes too big to build)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    if not pixels:
        return screen + b"\x3b"
    clear, end = 4, 5
    codes = []
    for i in range(width * height):
        if i % 2 == 0:
            codes.append(clear)
        codes.append(i % 2)
    codes.append(end)
    bits = sum(code << (3 * n) for n, code in enumerate(codes))
    data = bits.to_bytes(math.ceil(3 * len(codes) / 8), "little")
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return (screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02" + blocks + b"\x00" + b"\x3b")


def _riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WEBP" + b"".join(kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)
                              for kind, data in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _vp8l_payload(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14 | 1 << 28  # alpha used, version 0
    return b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP: the VP8X canvas header, then the lossless bitstream's own header."""
    vp8x = bytes([0x10, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _riff((b"VP8X", vp8x), (b"VP8L", _vp8l_payload(width, height)))


def webp_vp8l(width: int, height: int) -> bytes:
    return _riff((b"VP8L", _vp8l_payload(width, height)))


def webp_vp8(width: int, height: int) -> bytes:
    """A lossy WebP key frame header; the top two bits of each dimension are the upscaling hint."""
    frame = b"\x50\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width | 1 << 14, height | 2 << 14)
    return _riff((b"VP8 ", frame + b"\x00" * 10))


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, sof: int = 0xC0, exif_thumbnail: bool = False) -> bytes:
    """A baseline JPEG: SOI, an APP0 (JFIF) segment, optionally an EXIF segment whose embedded
    thumbnail has its own SOF0, then DQT and the frame header, Huffman table, scan and EOI."""
    out = b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif_thumbnail:
        thumb = b"\xff\xd8" + _segment(0xC0, b"\x08" + struct.pack(">HH", 16, 16) + b"\x01\x01\x11\x00")
        out += _segment(0xE1, b"Exif\x00\x00" + b"\x00" * 10 + thumb)
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))
    out += _segment(sof, b"\x08" + struct.pack(">HH", height, width) + b"\x01\x01\x11\x00")
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x00" * 4
    return out + b"\xff\xd9"


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


# --- image_size -------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [png, gif, webp_vp8x, webp_vp8l, webp_vp8, jpeg], ids=lambda f: f.__name__)
@pytest.mark.parametrize(("width", "height"), [(3, 2), (1, 1), (1920, 1080), (300, 4000)])
def test_image_size_reads_width_and_height_from_each_format(build, width, height):
    big = build in (png, gif) and width * height > 10_000  # too big to build the pixels of
    raw = build(width, height, pixels=False) if big else build(width, height)
    assert image_size(raw) == (width, height)


def test_a_progressive_jpeg_is_sized_too():
    assert image_size(jpeg(640, 480, sof=0xC2)) == (640, 480)


def test_a_jpeg_thumbnail_inside_exif_does_not_hide_the_real_size():
    assert image_size(jpeg(4032, 3024, exif_thumbnail=True)) == (4032, 3024)


@pytest.mark.parametrize("raw", [
    b"",
    b"hello, world",
    b"BM" + b"\x00" * 60,  # a BMP
    png(4, 4)[:12],  # a PNG cut before its header chunk
    b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00") + b"\xff\xd9",  # no frame
    b"RIFF\x10\x00\x00\x00WEBPVP8Z" + b"\x00" * 20,
], ids=["empty", "text", "bmp", "truncated-png", "jpeg-without-frame", "unknown-webp-chunk"])
def test_image_size_is_none_for_what_it_cannot_read(raw):
    assert image_size(raw) is None


# --- data URLs --------------------------------------------------------------------------------

def test_data_url_gives_the_pixel_size():
    assert data_url_image_size(data_url(png(5, 7))) == (5, 7)
    assert data_url_image_size(data_url(jpeg(800, 600), "image/jpeg")) == (800, 600)


def test_the_declared_type_does_not_matter_the_bytes_do():
    assert data_url_image_size(data_url(gif(2, 3), "image/png")) == (2, 3)


@pytest.mark.parametrize(("url", "words"), [
    ("https://example.com/cat.png", "an image must be sent inline as a data: URL"),
    ("file:///etc/passwd", "an image must be sent inline as a data: URL"),
    ("data:image/png,%89PNG", "must be base64 encoded"),
    ("data:image/png;base64", "must be base64 encoded"),
    ("data:image/png;base64,abc", "base64 data is corrupt"),
    (data_url(b"BM" + b"\x00" * 60, "image/bmp"), "cannot read the image's size; send PNG, JPEG, GIF or WebP"),
    (data_url(b"%PDF-1.7\n", "application/pdf"), "must name an image type"),
    (data_url(png(5, 7), "text/plain"), "must name an image type"),
    (data_url(png(5, 7), ""), "must name an image type"),
    (data_url(png(5, 7), "image/png;x=[{'k': 1}]"), "must name an image type"),
    (data_url(png(0, 10, pixels=False)), "the image has no pixels"),
    (data_url(png(10_000, 5_001, pixels=False)), "the image is 10000x5001; Ralex accepts images up to 50 megapixels"),
    (data_url(jpeg(65_535, 65_535), "image/jpeg"), "up to 50 megapixels"),
])
def test_data_urls_that_cannot_be_sized_are_errors_naming_the_fix(url, words):
    with pytest.raises(ImageError, match=words):
        data_url_image_size(url)


def test_fifty_megapixels_exactly_is_accepted():
    assert data_url_image_size(data_url(png(10_000, 5_000, pixels=False))) == (10_000, 5_000)


# --- the token bound --------------------------------------------------------------------------

def anthropic_tokens(width: int, height: int) -> int:
    return math.ceil(width * height / 750)


def gemini_tokens(width: int, height: int) -> int:
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def openai_tokens(width: int, height: int) -> int:
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


@pytest.mark.parametrize(("width", "height"), [
    (1, 1), (384, 384), (385, 1), (512, 512), (513, 513), (768, 768), (1024, 768), (1920, 1080),
    (4032, 3024), (10_000, 5_000), (50_000_000, 1), (1, 50_000_000),
])
def test_the_image_bound_is_at_least_every_providers_rule(width, height):
    bound = image_tokens_bound(width, height)
    assert bound >= anthropic_tokens(width, height)
    assert bound >= gemini_tokens(width, height)
    assert bound >= openai_tokens(width, height)


@given(st.integers(1, 20_000), st.integers(1, 20_000))
def test_the_image_bound_covers_every_providers_rule_for_any_size(width, height):
    bound = image_tokens_bound(width, height)
    assert bound >= max(anthropic_tokens(width, height), gemini_tokens(width, height), openai_tokens(width, height))


def test_a_bigger_image_never_gets_a_smaller_bound():
    assert image_tokens_bound(1000, 1000) <= image_tokens_bound(1001, 1000) <= image_tokens_bound(1001, 1001)
