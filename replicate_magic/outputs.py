"""What a model's output files are, from the prediction and the bytes themselves. Pure: no I/O.

A file-producing model (its ``Output`` schema says URIs, or its outputs are file URLs or
``data:`` URIs) reports a URL per file. Everything about a file that reaches the page is
decided here from the bytes, never from what a server claims: the type by magic numbers,
an image's size from its header (an "image" of 100,000 x 100,000 pixels would take the
browser's memory, so it is not shown), and the name from the URL's last segment, made safe.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .attachments import size_text as human_size
from .attachments import sniff as sniff_known

__all__ = ["EMBEDDABLE", "MAX_PIXELS", "FileFacts", "file_name", "file_urls", "human_size", "image_size",
           "parse_data_uri", "progress_of", "sniff"]

# Types a notebook shows inline as an image, a player or a video.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
AUDIO_TYPES = ("audio/wav", "audio/mpeg", "audio/ogg", "audio/flac")
VIDEO_TYPES = ("video/mp4", "video/webm")
EMBEDDABLE = IMAGE_TYPES + AUDIO_TYPES + VIDEO_TYPES
MAX_PIXELS = 64_000_000  # larger "images" are not shown: decoding one takes gigabytes
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
               "audio/wav": ".wav", "audio/mpeg": ".mp3", "audio/ogg": ".ogg", "audio/flac": ".flac",
               "video/mp4": ".mp4", "video/webm": ".webm", "application/pdf": ".pdf",
               "application/zip": ".zip", "application/json": ".json", "text/plain": ".txt"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_TQDM = re.compile(r"(\d{1,3})%\|[^|\n]*\|\s*(\d+)/(\d+)")


@dataclass(frozen=True)
class FileFacts:
    """What the bytes say: the type (sniffed), and an image's pixel size where it has one."""

    content_type: str
    size: int
    pixels: tuple[int, int] | None = None

    @property
    def embeddable(self) -> bool:
        """Safe and useful to show inline (a player, an image of sane size)."""
        if self.content_type in IMAGE_TYPES:
            return self.pixels is not None and self.pixels[0] * self.pixels[1] <= MAX_PIXELS
        return self.content_type in EMBEDDABLE


def file_urls(output: Any, kind: str) -> list[str] | None:
    """The output's files, one URL per output in order, or None when it is not files.

    The schema decides (``kind`` "files"); where it declares no URI output ("other", say a
    bare version id), outputs that are all https or ``data:`` URLs count as files too. A
    text model's output is never read as files, whatever its text says.
    """
    if kind == "text" or output is None:
        return None
    items = output if isinstance(output, list) else [output]
    if not items or not all(isinstance(item, str) for item in items):
        return None
    if kind == "files" or all(_looks_like_file(item) for item in items):
        return [str(item) for item in items]
    return None


def _looks_like_file(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered.startswith("data:"):
        return True
    parts = urlsplit(text.strip())
    return parts.scheme == "https" and bool(parts.hostname) and "." in parts.path.rsplit("/", 1)[-1] \
        and not any(c.isspace() for c in text.strip())


def parse_data_uri(url: str) -> tuple[str, bytes] | None:
    """(declared type, bytes) of a base64 ``data:`` URI; None for anything else or broken base64."""
    if not url[:5].lower() == "data:":
        return None
    head, comma, body = url[5:].partition(",")
    if not comma:
        return None
    params = head.split(";")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        return (params[0] or "text/plain", unquote(body).encode("utf-8"))
    try:
        return (params[0] or "application/octet-stream", base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        return None


def sniff(data: bytes) -> str:
    """The type the bytes are, by their magic numbers (``attachments.sniff``, the one table
    for files in and out); application/octet-stream when unknown."""
    return sniff_known(data) or "application/octet-stream"


def facts(data: bytes) -> FileFacts:
    content_type = sniff(data)
    pixels = image_size(data, content_type) if content_type in IMAGE_TYPES else None
    return FileFacts(content_type, len(data), pixels)


def image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding it; None when unreadable."""
    try:
        if content_type == "image/png":
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if content_type == "image/gif":
            width, height = struct.unpack("<HH", data[6:10])
            return width, height
        if content_type == "image/webp":
            return _webp_size(data)
        if content_type == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit width-1 and height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame header (SOFn) gives it; walk the segments to it."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None


def file_name(url: str, index: int, content_type: str | None) -> str:
    """A safe local name: the URL's last segment (``out-0.png``) or ``output-N``, with the
    extension of the sniffed type (a server's ``.png`` on a PDF is not kept). With no bytes
    to sniff (``content_type`` None: the download failed), the URL's own name, made safe."""
    last = "" if url[:5].lower() == "data:" else unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if content_type is None:
        return _SAFE_NAME.sub("_", last).strip("._")[:80] or f"output-{index}"
    extension = _EXTENSIONS.get(content_type, "")
    stem = _SAFE_NAME.sub("_", last.rsplit(".", 1)[0] if "." in last else last).strip("._")[:80]
    return f"{stem or f'output-{index}'}{extension}"


def progress_of(logs: str | None) -> tuple[int, int] | None:
    """(done, total) of the last tqdm bar in a model's logs (image models print one per step)."""
    if not logs:
        return None
    found = None
    for match in _TQDM.finditer(logs[-4096:]):
        found = match
    if found is None:
        return None
    done, total = int(found.group(2)), int(found.group(3))
    return (done, total) if 0 <= done <= total and total > 0 else None


def names_in_order(urls: Sequence[str], types: Sequence[str | None]) -> list[str]:
    """A distinct name per output (two ``out.png`` become ``out.png`` and ``out-1.png``)."""
    names: list[str] = []
    for index, (url, content_type) in enumerate(zip(urls, types, strict=True)):
        name = file_name(url, index, content_type)
        if name in names:
            stem, dot, extension = name.rpartition(".")
            name = f"{stem}-{index}.{extension}" if dot else f"{name}-{index}"
        names.append(name)
    return names
