"""A baseline JPEG (ITU T.81) encoder for pictures made of flat 8x8 blocks: DC terms only.

The emulator's pictures are flat per block, so each block's 63 AC terms are zero and a block is
one DC difference plus an end-of-block code: no DCT needed, and the decoded picture is exact up
to the YCbCr round trip. JFIF, 4:4:4, one quantization table of 8s, Annex K's DC table.
"""

from __future__ import annotations

import struct

__all__ = ["encode"]

# Table K.3 (luminance DC): how many codes of each length 1..16, then the categories 0..11.
_DC_COUNTS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# An AC table with one code: end-of-block (0x00), "0".
_AC_COUNTS = (1,) + (0,) * 15
_AC_VALUES = (0,)
_QUANT = 8  # a flat block of level-shifted value c has DC coefficient 8c: quantized, exactly c


def _codes(counts: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes (Annex C): symbol -> (code, length)."""
    table, code, at = {}, 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            table[values[at]] = (code, length)
            code, at = code + 1, at + 1
        code <<= 1
    return table


_DC = _codes(_DC_COUNTS, _DC_VALUES)
_EOB = _codes(_AC_COUNTS, _AC_VALUES)[0]


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _ycbcr(r: int, g: int, b: int) -> tuple[int, int, int]:
    """JFIF's RGB to YCbCr, level-shifted to -128..127."""
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return tuple(min(127, max(-128, round(v) - 128)) for v in (y, cb, cr))  # type: ignore[return-value]


def _scan(width: int, height: int, rgb: bytes) -> bytes:
    """The entropy-coded data: per block (left to right, top down), Y, Cb, Cr."""
    acc, nbits = 0, 0
    previous = [0, 0, 0]
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            at = (by * width + bx) * 3  # the block's top-left pixel stands for the block
            for comp, value in enumerate(_ycbcr(rgb[at], rgb[at + 1], rgb[at + 2])):
                diff, previous[comp] = value - previous[comp], value
                category = abs(diff).bit_length()
                code, length = _DC[category]
                extra = diff if diff >= 0 else diff + (1 << category) - 1
                acc = (acc << (length + category)) | (code << category) | extra
                acc = (acc << _EOB[1]) | _EOB[0]
                nbits += length + category + _EOB[1]
    pad = -nbits % 8
    data = ((acc << pad) | ((1 << pad) - 1)).to_bytes((nbits + pad) // 8, "big")  # pad with 1s
    return data.replace(b"\xff", b"\xff\x00")  # byte stuffing


def encode(width: int, height: int, rgb: bytes) -> bytes:
    if not (1 <= width <= 65535 and 1 <= height <= 65535):
        raise ValueError("JPEG sides are 1 to 65535 pixels")
    jfif = b"JFIF\x00\x01\x01\x00" + struct.pack(">HH", 1, 1) + b"\x00\x00"
    quant = b"\x00" + bytes([_QUANT]) * 64
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    huffman = (b"\x00" + bytes(_DC_COUNTS) + bytes(_DC_VALUES)
               + b"\x10" + bytes(_AC_COUNTS) + bytes(_AC_VALUES))
    scan = bytes([3]) + b"".join(bytes([c, 0x00]) for c in (1, 2, 3)) + b"\x00\x3f\x00"
    return (b"\xff\xd8" + _segment(0xFFE0, jfif) + _segment(0xFFDB, quant) + _segment(0xFFC0, frame)
            + _segment(0xFFC4, huffman) + _segment(0xFFDA, scan) + _scan(width, height, rgb) + b"\xff\xd9")
