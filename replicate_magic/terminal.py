"""Text for terminals, with control characters and escape sequences removed. Pure.

Model replies, server error details and loaded conversation names are hostile text. In a
terminal, ``ESC ] 52 ; c ; ...`` writes the clipboard, ``ESC ] 0 ; ...`` sets the window
title, ``ESC [ 2 J`` clears the screen, ``ESC [ 8 m`` hides what follows and a carriage
return overwrites the line just shown. What reaches a terminal goes through
:class:`TerminalSanitizer` (a stream, chunk by chunk) or :func:`clean` (one string).

The rules (ECMA-48's syntax, as the VT500-style parsers of real terminals read it):

- Kept: every printable character, newline and tab.
- ``CR LF`` becomes ``LF``; a lone ``CR`` becomes ``LF`` too, so text with old Mac line
  ends keeps its lines while nothing can be overwritten.
- Dropped: every other C0 control (NUL, BEL, BS, ...), DEL, every C1 control
  (U+0080..U+009F), and the bidi embedding, override and isolate controls (U+202A..U+202E,
  U+2066..U+2069), which can hide or reorder text.
- Removed whole, introducer, parameters and body:
  - CSI: ``ESC [`` or U+009B, parameters and intermediates (0x20..0x3F), up to and
    including the final byte (0x40..0x7E);
  - escapes: ``ESC``, intermediates (0x20..0x2F), one final character (0x30..0x7E);
  - control strings: OSC (``ESC ]``, U+009D), DCS (``ESC P``, U+0090), SOS (``ESC X``,
    U+0098), PM (``ESC ^``, U+009E) and APC (``ESC _``, U+009F), up to and including BEL
    or ST (``ESC \\`` or U+009C).
- A sequence is abandoned, as terminals do, by CAN or SUB (dropped), by ESC (which starts
  the next sequence) and, in a CSI or an escape, by any character that cannot belong there
  (that character is then read as ordinary text, so it is kept or dropped by the rules
  above).
- Bounded: after ``STRING_LIMIT`` characters inside one sequence, the sanitizer returns to
  ordinary text. An unterminated OSC would otherwise hide the rest of a reply; now it hides
  at most that much. Nothing of a sequence is buffered (it is dropped, so only the state is
  kept), and the state survives chunk boundaries: a sequence split across stream tokens is
  removed whole. ``flush`` ends the stream; a sequence still open then is simply dropped.
"""

from __future__ import annotations

import re

__all__ = ["STRING_LIMIT", "TerminalSanitizer", "clean"]

STRING_LIMIT = 4096
"""Characters one sequence may hide before what follows shows as text again."""

# Parser states.
_TEXT, _ESCAPE, _ESCAPE_INTERMEDIATE, _CSI, _STRING, _STRING_ESCAPE = range(6)

# In ordinary text, the characters that need a decision; runs of anything else are copied.
_SPECIAL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Inside a control string, the characters that can end or abandon it.
_STRING_END = re.compile("[\x07\x18\x1a\x1b\x9c]")

_ESC, _CAN, _SUB, _BEL, _ST = "\x1b", "\x18", "\x1a", "\x07", "\x9c"
_STRING_FINALS = frozenset("]PX^_")  # after ESC: OSC, DCS, SOS, PM, APC
_C1_STRINGS = frozenset("\x9d\x90\x98\x9e\x9f")  # their 8-bit forms
_C1_CSI = "\x9b"


class TerminalSanitizer:
    """Removes control characters and escape sequences from a stream of text.

    ``feed`` returns the printable text of each chunk at once (nothing printable is held
    back), and ``flush`` ends the stream. One instance per stream: it remembers a sequence
    that a chunk left open.
    """

    def __init__(self) -> None:
        self._state = _TEXT
        self._length = 0  # characters inside the current sequence, for STRING_LIMIT
        self._after_cr = False  # a CR was just shown as LF: the LF of CR LF is not shown again

    def feed(self, chunk: str) -> str:
        """The printable text of ``chunk``."""
        out: list[str] = []
        i, n = 0, len(chunk)
        while i < n:
            if self._after_cr:
                self._after_cr = False
                if chunk[i] == "\n":
                    i += 1
                    continue
            state = self._state
            if state == _TEXT:
                match = _SPECIAL.search(chunk, i)
                end = match.start() if match else n
                if end > i:
                    out.append(chunk[i:end])
                    i = end
                    continue
                i += 1
                self._text_control(chunk[end], out)
            elif state == _STRING:
                i = self._string_body(chunk, i, n)
            else:
                i = self._sequence(chunk[i], i)
        return "".join(out)

    def flush(self) -> str:
        """End of the stream: an open sequence is dropped. Returns the text still held (none)."""
        self._state, self._length, self._after_cr = _TEXT, 0, False
        return ""

    def _text_control(self, char: str, out: list[str]) -> None:
        if char == "\r":
            out.append("\n")
            self._after_cr = True
        elif char == _ESC:
            self._enter(_ESCAPE)
        elif char == _C1_CSI:
            self._enter(_CSI)
        elif char in _C1_STRINGS:
            self._enter(_STRING)
        # Anything else (C0, DEL, other C1, bidi controls) is dropped.

    def _string_body(self, chunk: str, i: int, n: int) -> int:
        """Skip a control string's body up to its end, the chunk's end or the limit."""
        limit = min(n, i + STRING_LIMIT - self._length)
        match = _STRING_END.search(chunk, i, limit)
        if match is None:
            self._length += limit - i
            if self._length >= STRING_LIMIT:
                self._state = _TEXT  # never terminated: show what follows
            return limit
        char = match.group()
        self._state = _STRING_ESCAPE if char == _ESC else _TEXT
        return match.end()

    def _sequence(self, char: str, i: int) -> int:
        """One character in an escape, a CSI or after an ESC in a string; the next index."""
        state, code = self._state, ord(char)
        if state == _STRING_ESCAPE:
            if char == "\\":  # ST
                self._state = _TEXT
                return i + 1
            # Any other ESC abandons the string and starts a new sequence: read it as one.
            self._enter(_ESCAPE)
        if char == _ESC:
            self._enter(_ESCAPE)
        elif char in (_CAN, _SUB):
            self._state = _TEXT
        elif self._state == _ESCAPE:
            if char == "[":
                self._enter(_CSI)
            elif char in _STRING_FINALS:
                self._enter(_STRING)
            elif 0x20 <= code <= 0x2F:
                self._enter(_ESCAPE_INTERMEDIATE)
            elif 0x30 <= code <= 0x7E:
                self._state = _TEXT  # a two-character escape (ESC c resets the terminal)
            else:
                self._state = _TEXT
                return i  # not part of an escape: read it as text
        elif self._state == _ESCAPE_INTERMEDIATE:
            if 0x20 <= code <= 0x2F:
                self._count()
            elif 0x30 <= code <= 0x7E:
                self._state = _TEXT
            else:
                self._state = _TEXT
                return i
        else:  # _CSI
            if 0x20 <= code <= 0x3F:
                self._count()
            elif 0x40 <= code <= 0x7E:
                self._state = _TEXT
            else:
                self._state = _TEXT
                return i
        return i + 1

    def _enter(self, state: int) -> None:
        self._state, self._length = state, 0

    def _count(self) -> None:
        self._length += 1
        if self._length >= STRING_LIMIT:
            self._state = _TEXT


def clean(text: str) -> str:
    """``text`` without control characters and escape sequences (see the module's rules)."""
    sanitizer = TerminalSanitizer()
    return sanitizer.feed(text) + sanitizer.flush()
