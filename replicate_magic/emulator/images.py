"""Deterministic, valid images for the emulated image models (pure: seed in, bytes out).

A picture is a grid of flat 16-pixel cells whose colours follow two seeded gradients, so PNG,
lossless WebP and a DC-only JPEG can all show exactly the same thing, small and quick to make.
For benchmarks a picture can instead be seeded noise of about a given size (it does not compress).
No Pillow: PNG is zlib with CRCs, WebP and JPEG are written by webp.py and jpeg.py.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass

from . import jpeg, webp

__all__ = ["Picture", "picture", "noise", "encode", "png", "flux_size", "scaled", "dimensions", "sniff",
           "CONTENT_TYPES", "CELL"]

CELL = 16  # pixels per cell side; a multiple of 8 so every JPEG block is flat
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}

# cog-flux's ASPECT_RATIOS (1 megapixel), as quoted from its predict.py in public repositories;
# for megapixels "0.25" each side is halved (reconstructed: a quarter of the pixels).
_FLUX_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832),
    "2:3": (832, 1216), "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152),
    "4:3": (1152, 896), "9:16": (768, 1344), "9:21": (640, 1536),
}


@dataclass(frozen=True)
class Picture:
    """An RGB picture: `rgb` holds width*height*3 bytes, row by row."""

    width: int
    height: int
    rgb: bytes


def flux_size(aspect_ratio: str, megapixels: str) -> tuple[int, int]:
    width, height = _FLUX_SIZES.get(aspect_ratio, _FLUX_SIZES["1:1"])
    if megapixels == "0.25":
        width, height = width // 2, height // 2
    return width, height


def scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    """The real size times `scale`, in whole cells (at least one)."""
    def side(n: int) -> int:
        return max(CELL, round(n * scale / CELL) * CELL)
    return side(width), side(height)


def _colour(digest: bytes, at: int) -> tuple[int, int, int]:
    return digest[at], digest[at + 1], digest[at + 2]


def picture(width: int, height: int, seed: bytes) -> Picture:
    """Cells shading from one seeded colour to another across, and to a third down, with a seeded
    diagonal band, so that two seeds give visibly different pictures."""
    digest = hashlib.sha256(seed).digest()
    top_left, top_right, bottom = _colour(digest, 0), _colour(digest, 3), _colour(digest, 6)
    band = _colour(digest, 9)
    phase = digest[12]
    cols, rows = max(1, width // CELL), max(1, height // CELL)
    out = bytearray()
    for cy in range(rows):
        ty = cy / max(rows - 1, 1)
        cells = bytearray()
        for cx in range(cols):
            tx = cx / max(cols - 1, 1)
            if (cx + cy + phase) % 7 == 0:
                rgb = bytes(band)
            else:
                rgb = bytes(round((a + (b - a) * tx) * (1 - ty) + c * ty)
                            for a, b, c in zip(top_left, top_right, bottom, strict=True))
            cells += rgb * CELL
        row = bytes(cells) + bytes(cells[-3:]) * (width - cols * CELL)  # a ragged edge repeats
        out += row * CELL
    out += bytes(out[-width * 3:]) * (height - rows * CELL)
    return Picture(width, height, bytes(out))


def noise(size_bytes: int, aspect: float, seed: bytes) -> Picture:
    """Seeded RGB noise of about `size_bytes` raw bytes: encodes to about that many bytes."""
    pixels = max(1, size_bytes // 3)
    width = max(1, round(math.sqrt(pixels * aspect)))
    height = max(1, pixels // width)
    return Picture(width, height, hashlib.shake_256(seed).digest(width * height * 3))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(pic: Picture, level: int = 6) -> bytes:
    """PNG (RFC 2083): 8-bit RGB, filter 0 on every row, one IDAT."""
    stride = pic.width * 3
    raw = b"".join(b"\x00" + pic.rgb[y * stride:(y + 1) * stride] for y in range(pic.height))
    header = struct.pack(">IIBBBBB", pic.width, pic.height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, level))
            + _chunk(b"IEND", b""))


def encode(pic: Picture, fmt: str, noisy: bool = False) -> bytes:
    """`pic` as ``png``, ``webp`` (lossless) or ``jpg`` (baseline, flat 8x8 blocks)."""
    if fmt == "webp":
        return webp.encode(pic.width, pic.height, pic.rgb)
    if fmt == "jpg":
        return jpeg.encode(pic.width, pic.height, pic.rgb)
    return png(pic, level=1 if noisy else 6)  # noise does not compress: don't try hard


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, lossless WebP or baseline JPEG, else None (a quick sniff)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    at = 2 if data.startswith(b"\xff\xd8") else len(data)
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None


def sniff(data: bytes) -> str | None:
    """The image type its first bytes say, if any."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None
