"""Images in a chat request: their pixel size, read from the file header, and an upper bound of
the prompt tokens any provider bills for them. Pure functions; no I/O.

Providers bill an image by its pixels, not its bytes (a 20 kB PNG can be 10,000 px wide), so the
bound comes from width x height, taking the largest of the published rules without their
downscaling: Anthropic ``w*h/750``; Google 258 per 384 px tile (Gemini uses 768 px tiles);
OpenAI ``85 + 170`` per 512 px tile.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from typing import Final

MAX_MEGAPIXELS: Final = 50
"""Larger images are refused: every provider downsizes them, and their bound would be absurd."""


REMOTE_IMAGE: Final = ("an image must be sent inline as a data: URL (data:image/png;base64,...); Ralex cannot "
                       "price a remote image, and the upstream would fetch any address it names")


_IMAGE_TYPE: Final = re.compile(r"image/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
"""The media type a data URL must name: ``image/`` and a subtype (which one does not matter: the bytes do)."""


class ImageError(ValueError):
    """The image cannot be sized; the message says what to send instead."""


def image_tokens_bound(width: int, height: int) -> int:
    """Upper bound of the prompt tokens one ``width`` x ``height`` image is billed as."""
    anthropic = math.ceil(width * height / 750)
    google = 258 * math.ceil(width / 384) * math.ceil(height / 384)
    openai = 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)
    return max(anthropic, google, openai)


def data_url_image_size(url: str) -> tuple[int, int]:
    """(width, height) of a ``data:image/...;base64,`` URL; raises :class:`ImageError`."""
    if not url.startswith("data:"):
        raise ImageError(REMOTE_IMAGE)
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageError("an image data: URL must be base64 encoded (data:image/png;base64,...)")
    if not _IMAGE_TYPE.fullmatch(header[5:-7]):
        raise ImageError("an image data: URL must name an image type (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise ImageError("the image's base64 data is corrupt") from None
    size = image_size(raw)
    if size is None:
        raise ImageError("cannot read the image's size; send PNG, JPEG, GIF or WebP")
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError("the image has no pixels")
    if width * height > MAX_MEGAPIXELS * 1_000_000:
        raise ImageError(f"the image is {width}x{height}; Ralex accepts images up to {MAX_MEGAPIXELS} megapixels, "
                         "downscale it first")
    return size


def image_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG header; None for anything else."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR" and len(raw) >= 24:
        w, h = struct.unpack(">II", raw[16:24])
        return int(w), int(h)
    if raw[:6] in (b"GIF87a", b"GIF89a") and len(raw) >= 10:
        w, h = struct.unpack("<HH", raw[6:10])
        return int(w), int(h)
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return _webp_size(raw)
    if raw[:2] == b"\xff\xd8":
        return _jpeg_size(raw)
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    chunk = raw[12:16]
    if chunk == b"VP8X" and len(raw) >= 30:
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(raw) >= 25:
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(raw) >= 30:
        w, h = struct.unpack("<HH", raw[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = int.from_bytes(raw[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS and i + 9 <= len(raw):
            h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
            return int(w), int(h)
        if length < 2:
            return None
        i += 2 + length
    return None
