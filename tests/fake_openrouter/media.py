"""Prompt tokens for non-text message parts: images by pixel size, files and audio by payload size.

Rules (the fake's own, modelled on Anthropic's image accounting):

* ``image_url`` with a ``data:`` URL: the width and height are read from the PNG, JPEG, GIF or WebP header in
  the base64 data; tokens = ``max(85, ceil(width * height / 750))``. Data whose size cannot be read counts
  like a remote image.
* ``image_url`` with any other URL (``https://...``): ``REMOTE_IMAGE_TOKENS`` (1600); an image part
  without a URL counts nothing.
* ``file`` (``file.file_data``), ``input_audio`` (``input_audio.data``) and inline ``video_url`` parts:
  ``ceil(len(base64 payload) / 4)``, the payload being what follows ``base64,`` in a data URL (a bare
  base64 string counts whole). Other part types count nothing.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

MIN_IMAGE_TOKENS = 85
PIXELS_PER_TOKEN = 750
REMOTE_IMAGE_TOKENS = 1600
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); DHT (C4), JPG (C8), DAC (CC) are not.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass
class MediaCount:
    """What the non-text parts of a request add to its prompt."""

    tokens: int = 0
    images: int = 0
    media: int = 0  # every non-text part: images, files, audio, video
    audio: int = 0


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, JPEG or WebP header, or None if the format is not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        return jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return webp_size(data)
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame and read its height and width."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):  # standalone markers carry no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas size of a lossy (VP8), lossless (VP8L) or extended (VP8X) WebP."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b0, b1, b2, b3 = data[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


def base64_payload(value: str) -> str:
    """The base64 text of a ``data:...;base64,XXXX`` URL (or the value itself if it is not one)."""
    if value.startswith("data:") and "," in value:
        return value.split(",", 1)[1]
    return value


def image_tokens(url: str) -> int:
    """Tokens for one image: by pixel size for inline data, a flat rate for a remote URL."""
    if not url:
        return 0
    if url.startswith("data:"):
        try:
            size = image_size(base64.b64decode(base64_payload(url).strip(), validate=False))
        except (binascii.Error, ValueError):
            size = None
        if size is not None:
            width, height = size
            return max(MIN_IMAGE_TOKENS, math.ceil(width * height / PIXELS_PER_TOKEN))
    return REMOTE_IMAGE_TOKENS


def url_of(value: Any) -> str:
    """``{"url": "..."}`` or a bare string, as clients send ``image_url`` / ``video_url``."""
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else ""


def payload_tokens(value: Any) -> int:
    return math.ceil(len(base64_payload(value)) / 4) if isinstance(value, str) else 0


def count_media(messages: list[Any]) -> MediaCount:
    """Sum the prompt tokens and counts of every non-text content part in ``messages``."""
    count = MediaCount()
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict) or part.get("type") in (None, "text"):
                continue
            kind = part["type"]
            count.media += 1
            if kind == "image_url":
                count.images += 1
                count.tokens += image_tokens(url_of(part.get("image_url")))
            elif kind == "file":
                file = part.get("file")
                count.tokens += payload_tokens(file.get("file_data") if isinstance(file, dict) else None)
            elif kind == "input_audio":
                count.audio += 1
                audio = part.get("input_audio")
                count.tokens += payload_tokens(audio.get("data") if isinstance(audio, dict) else None)
            elif kind == "video_url" and (url := url_of(part.get("video_url"))).startswith("data:"):
                count.tokens += payload_tokens(url)
    return count
