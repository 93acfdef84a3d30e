"""Incremental Server-Sent Events decoder (pure: no I/O, no event loop).

Follows the WHATWG HTML Standard, section 9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end at CRLF, LF or CR; ``:`` starts a comment; ``field:value`` loses one
leading space; ``data`` lines are joined with LF; a blank line dispatches.

Feed raw network chunks of any size to :meth:`EventDecoder.feed`; call
:meth:`EventDecoder.close` at end of stream. A line that never ends, or an event whose
``data`` lines never dispatch, would grow without bound: past ``max_line`` or
``max_event`` the decoder raises :class:`EventTooLarge` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_EVENT", "MAX_LINE", "EventDecoder", "EventTooLarge", "ServerSentEvent"]

_BOM = "\ufeff"
MAX_LINE = 16 * 1024 * 1024  # bytes of one line (replicate-go tests 16 MB lines)
MAX_EVENT = 16 * 1024 * 1024  # characters of one event's data, counting _LINE_COST per line
# What one data line costs beyond its characters (a list slot and a str object, near
# enough), so that a flood of empty data lines is bounded too.
_LINE_COST = 64


class EventTooLarge(ValueError):
    """A line or an event grew past the decoder's limit."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 4x more, once per event
class ServerSentEvent:
    """One dispatched event."""

    event: str = "message"
    """Event type; ``"message"`` when the block had no (or an empty) ``event`` field."""
    data: str = ""
    """The block's ``data`` lines joined with ``"\\n"``."""
    id: str = ""
    """The decoder's last event id when this event was dispatched."""
    retry: int | None = None
    """This block's valid ``retry`` value (milliseconds), if any."""


class EventDecoder:
    """Turn a byte stream, in arbitrary chunks, into :class:`ServerSentEvent` objects.

    With ``keep_dataless=True`` a block that has an ``event`` field but no
    ``data`` line is dispatched with empty data (the spec drops it); Replicate
    may end a stream with a bare ``event: done``.
    """

    def __init__(self, *, keep_dataless: bool = False, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        self.keep_dataless = keep_dataless
        self.max_line = max_line
        self.max_event = max_event
        self.last_event_id: str = ""
        """Id of the last dispatched block; send it as ``Last-Event-ID`` to resume."""
        self.retry: int | None = None
        """Last valid ``retry`` value seen, in milliseconds."""
        self._reset_stream()

    def _reset_stream(self) -> None:
        # Pieces of the unfinished last line; joined once, when its line end arrives.
        self._pending: list[bytes] = []
        self._pending_size = 0
        # The previous chunk ended in CR: an LF opening the next chunk ends no new line.
        self._after_cr = False
        self._at_start = True
        self._data: list[str] = []
        self._data_size = 0  # what _data costs, in the units of max_event
        self._event: str | None = None
        self._id = self.last_event_id
        self._block_retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk; return the events completed by it."""
        if not chunk:
            return []
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            # CRLF first, so that CR CRLF stays two line ends.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._hold(chunk)
            return []
        if self._pending:
            self._check_line(self._pending_size + chunk.find(b"\n"))
            self._pending.append(chunk[:end])
            block = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
        else:
            block = chunk[:end]
        if end + 1 < len(chunk):
            self._hold(chunk[end + 1 :])
        # UTF-8 sequences never contain CR/LF bytes, so decoding whole lines at
        # once equals decoding each line; str.split("\n") (unlike splitlines)
        # splits on LF only.
        return self._lines(block.decode("utf-8", "replace").split("\n"))

    def _hold(self, piece: bytes) -> None:
        """Keep a piece of the unfinished last line."""
        self._pending.append(piece)
        self._pending_size += len(piece)
        self._check_line(self._pending_size)

    def _check_line(self, size: int) -> None:
        if size > self.max_line:
            self._reset_stream()  # drop what was held: the memory is the point
            raise EventTooLarge(f"the event stream sent a line of more than {_size(self.max_line)} without ending it")

    def close(self) -> list[ServerSentEvent]:
        """End of stream: process an unterminated last line, drop the unfinished block.

        The decoder is then ready for a new stream (a reconnection); ``last_event_id``
        and ``retry`` are kept.
        """
        events: list[ServerSentEvent] = []
        if self._pending:
            events = self._lines([b"".join(self._pending).decode("utf-8", "replace")])
        self._reset_stream()
        return events

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        if self._at_start:
            self._at_start = False
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][1:]
        events: list[ServerSentEvent] = []
        # Locals instead of attribute access: this loop is the hot path.
        data = self._data
        data_size = self._data_size
        max_event = self.max_event
        event = self._event
        id_ = self._id
        block_retry = self._block_retry
        for line in lines:
            if not line:
                self.last_event_id = id_
                if data or (event is not None and self.keep_dataless):
                    events.append(ServerSentEvent(
                        event or "message", data[0] if len(data) == 1 else "\n".join(data), id_, block_retry))
                    data = []
                data_size = 0
                event = None
                block_retry = None
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
                data_size += len(value) + _LINE_COST
                if data_size > max_event:
                    self._reset_stream()
                    raise EventTooLarge(
                        f"the event stream sent an event of more than {_size(self.max_event)} without ending it")
            elif name == "event":
                event = value
            elif name == "id":
                if "\0" not in value:
                    id_ = value
            elif name == "retry" and value.isascii() and value.isdigit():
                block_retry = self.retry = int(value)
            # Anything else, including comments (empty name), is ignored.
        self._data = data
        self._data_size = data_size
        self._event = event
        self._id = id_
        self._block_retry = block_retry
        return events


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
