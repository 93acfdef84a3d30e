"""SSE wire format as Replicate's stream server writes it (pure: bytes in, bytes out)."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["encode_event", "encode_comment", "split_pieces", "LINE_ENDINGS"]

LINE_ENDINGS = ("\n", "\r\n", "\r")
# SSE has no escaping: any line break inside a value must become a new data line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PIECE_SIZES = (1, 3, 2, 1, 2, 3)


def encode_event(event_id: str, name: str, data: str, line_ending: str = "\n") -> bytes:
    """One event: ``id``, ``event``, one ``data:`` line per line of `data`, blank line."""
    lines = [f"id: {event_id}", f"event: {name}"]
    lines += [f"data: {line}" for line in _LINE_BREAK.split(data)]
    return (line_ending.join(lines) + line_ending * 2).encode("utf-8")


def encode_comment(text: str, line_ending: str = "\n") -> bytes:
    return f": {text}{line_ending}{line_ending}".encode()


def split_pieces(data: bytes, start: int = 0) -> Iterator[bytes]:
    """Cut bytes into 1-3 byte pieces (fixed pattern, so failures reproduce).

    `start` continues the pattern across calls so consecutive events are not all
    cut at the same offsets.
    """
    pos, turn = 0, start
    while pos < len(data):
        size = _PIECE_SIZES[turn % len(_PIECE_SIZES)]
        yield data[pos : pos + size]
        pos += size
        turn += 1
