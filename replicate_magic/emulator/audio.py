"""Deterministic, valid audio files for the emulated audio model (pure: seed in, bytes out)."""

from __future__ import annotations

import hashlib
import math
import struct
from array import array

__all__ = ["wav", "mp3", "SAMPLE_RATE", "CONTENT_TYPES"]

SAMPLE_RATE = 8000  # mono 16-bit: small files (real musicgen writes 32 kHz); any player takes it
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_NOTE = 0.25  # seconds per note
_SCALE = (261.63, 293.66, 329.63, 392.00, 440.00, 523.25)  # C major pentatonic, C4..C5


def _samples(seconds: float, seed: bytes) -> array[int]:
    """A seeded tune: one pentatonic note every quarter second, each faded in and out."""
    digest = hashlib.sha256(seed).digest()
    per_note = int(SAMPLE_RATE * _NOTE)
    total = max(1, int(SAMPLE_RATE * seconds))
    out = array("h")
    note = 0
    while len(out) < total:
        freq = _SCALE[digest[note % len(digest)] % len(_SCALE)]
        step = 2 * math.pi * freq / SAMPLE_RATE
        for i in range(min(per_note, total - len(out))):
            fade = min(1.0, i / 200, (per_note - i) / 200)
            out.append(int(12000 * fade * math.sin(step * i)))
        note += 1
    return out


def wav(seconds: float, seed: bytes) -> bytes:
    """RIFF WAVE, PCM 16-bit little-endian, mono."""
    samples = _samples(seconds, seed)
    if struct.pack("=H", 1) != struct.pack("<H", 1):
        samples.byteswap()
    data = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def mp3(seconds: float) -> bytes:
    """Silent MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, mono): all-zero side information
    decodes as silence, so valid frames need no encoder. The tune is only in the WAV."""
    header = bytes([0xFF, 0xFB, 0x90, 0xC4])  # sync, MPEG-1 L3 no CRC; 128k, 44.1k; mono, original
    frame = header + bytes(144 * 128000 // 44100 - len(header))  # 417 bytes, no padding
    frames = max(1, round(seconds * 44100 / 1152))
    return frame * frames
