"""A lossless WebP (VP8L) encoder, small enough to read: no transforms, no LZ77, no colour cache.

Follows the WebP Lossless Bitstream Specification (RFC 9649). Every pixel is three literal
8-bit prefix codes (green, red, blue); alpha and distance codes have one symbol each, so they
take no bits. A pixel is then exactly 24 bits, so the pixel data is the picture's bytes with the
channels reordered and each byte's bits reversed (prefix codes go most significant bit first into
a least-significant-bit-first stream), shifted past the header: all of it done in C by bytes and int.
"""

from __future__ import annotations

import struct

__all__ = ["encode"]

_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
# The order code-length code lengths are written in (kCodeLengthCodeOrder).
_CODE_LENGTH_ORDER = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)


class _Bits:
    """Least-significant-bit-first bit writer (VP8L's ReadBits order)."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, nbits: int) -> None:
        self.value |= (value & ((1 << nbits) - 1)) << self.count
        self.count += nbits


def _all_eight_bits(bits: _Bits, alphabet: int) -> None:
    """A normal prefix code giving the first 256 symbols 8-bit codes and the rest none.

    Its code lengths are themselves coded with a two-symbol code: length 0 is ``0``, 8 is ``1``.
    """
    bits.put(0, 1)  # normal, not simple
    used = _CODE_LENGTH_ORDER.index(8) + 1  # write code lengths up to the one for "8"
    bits.put(used - 4, 4)
    for symbol in _CODE_LENGTH_ORDER[:used]:
        bits.put(1 if symbol in (0, 8) else 0, 3)
    bits.put(0, 1)  # max_symbol not given: every symbol's length follows
    for symbol in range(alphabet):
        bits.put(1 if symbol < 256 else 0, 1)


def _single(bits: _Bits, symbol: int) -> None:
    """A simple prefix code of one symbol: reading it takes no bits."""
    bits.put(1, 1)  # simple
    bits.put(0, 1)  # one symbol
    if symbol < 2:
        bits.put(0, 1)
        bits.put(symbol, 1)
    else:
        bits.put(1, 1)
        bits.put(symbol, 8)


def encode(width: int, height: int, rgb: bytes) -> bytes:
    """A lossless, opaque WebP of `width` x `height` RGB pixels."""
    if not (1 <= width <= 16384 and 1 <= height <= 16384):
        raise ValueError("WebP sides are 1 to 16384 pixels")
    bits = _Bits()
    bits.put(0x2F, 8)  # signature
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(0, 1)  # alpha_is_used: no
    bits.put(0, 3)  # version 0
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes: one group for the whole picture
    _all_eight_bits(bits, 256 + 24)  # green + LZ77 lengths (no colour cache)
    _all_eight_bits(bits, 256)  # red
    _all_eight_bits(bits, 256)  # blue
    _single(bits, 255)  # alpha: always opaque
    _single(bits, 0)  # distance: never used
    symbols = bytearray(len(rgb))
    symbols[0::3], symbols[1::3], symbols[2::3] = rgb[1::3], rgb[0::3], rgb[2::3]  # G, R, B
    pixels = int.from_bytes(bytes(symbols).translate(_REVERSED), "little")
    total = bits.count + 8 * len(symbols)
    data = (bits.value | (pixels << bits.count)).to_bytes((total + 7) // 8, "little")
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
