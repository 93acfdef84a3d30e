"""Tests for replicate_magic.sse, the incremental Server-Sent Events decoder."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicate_magic.sse import (
    MAX_EVENT,
    MAX_LINE,
    EventDecoder,
    EventTooLarge,
    ServerSentEvent,
)


def decode(*chunks: bytes, keep_dataless: bool = False) -> list[ServerSentEvent]:
    decoder = EventDecoder(keep_dataless=keep_dataless)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def msg(data: str, id: str = "", event: str = "message", retry: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


# --- WHATWG examples (HTML Standard, 9.2.6 / 9.2.7) ---------------------------

WHATWG_EXAMPLES = [
    pytest.param(b"data: YHOO\ndata: +2\ndata: 10\n\n", [msg("YHOO\n+2\n10")], id="stock-ticker"),
    pytest.param(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [msg("first event", id="1"), msg("second event"), msg(" third event")],
        id="comment-ids-and-space",
    ),
    pytest.param(b"data\n\ndata\ndata\n\ndata:", [msg(""), msg("\n")], id="empty-data-lines"),
    pytest.param(b"data:test\n\ndata: test\n\n", [msg("test"), msg("test")], id="leading-space"),
]


@pytest.mark.parametrize(("stream", "expected"), WHATWG_EXAMPLES)
def test_whatwg_examples(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert decode(stream) == expected


def test_empty_id_resets_last_event_id() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\n") == [msg("a", id="1")]
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"data: b\n\n") == [msg("b", id="1")]  # persists across events
    assert decoder.feed(b"id\ndata: c\n\n") == [msg("c")]
    assert decoder.last_event_id == ""


# --- Single-feature cases -----------------------------------------------------

FIELD_CASES = [
    pytest.param(b"data: x\n\n", [msg("x")], id="one-space-removed"),
    pytest.param(b"data:   x\n\n", [msg("  x")], id="only-one-space-removed"),
    pytest.param(b"data:  world\n\n", [msg(" world")], id="token-starting-with-space"),
    pytest.param(b"data:\n\n", [msg("")], id="empty-data-field"),
    pytest.param(b"data: a\ndata:\ndata: b\n\n", [msg("a\n\nb")], id="empty-line-inside-data"),
    pytest.param(b"data: a:b: c\n\n", [msg("a:b: c")], id="colons-in-value"),
    pytest.param(b"data:\tx\n\n", [msg("\tx")], id="tab-kept"),
    pytest.param(b"\xef\xbb\xbfdata: x\n\n", [msg("x")], id="leading-bom"),
    pytest.param(b"data: \xef\xbb\xbfx\n\n", [msg("\ufeffx")], id="bom-inside-kept"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [], id="only-one-bom-stripped"),
    pytest.param(b"id: 1\x002\ndata: x\n\n", [msg("x")], id="id-with-nul-ignored"),
    pytest.param(b"id: 7\nid: 1\x00\ndata: x\n\n", [msg("x", id="7")], id="id-with-nul-keeps-previous"),
    pytest.param(b"retry: 1500\ndata: x\n\n", [msg("x", retry=1500)], id="retry"),
    pytest.param(b"retry: 15s\ndata: x\n\n", [msg("x")], id="retry-not-digits"),
    pytest.param(b"retry: -1\ndata: x\n\n", [msg("x")], id="retry-negative"),
    pytest.param(b"retry:\ndata: x\n\n", [msg("x")], id="retry-empty"),
    pytest.param("retry: ١٢\ndata: x\n\n".encode(), [msg("x")], id="retry-non-ascii-digits"),
    pytest.param(b"retry: 5\n\ndata: x\n\n", [msg("x")], id="retry-belongs-to-its-block"),
    pytest.param(b"foo: bar\ndata: x\nData: y\n\n", [msg("x")], id="unknown-fields-ignored"),
    pytest.param(b"event: what\ndata: x\n\n", [msg("x", event="what")], id="unknown-event-dispatched"),
    pytest.param(b"event:\ndata: x\n\n", [msg("x")], id="empty-event-is-message"),
    pytest.param(b"event: output\n\ndata: x\n\n", [msg("x")], id="event-type-resets"),
    pytest.param(b":comment\n: another\ndata: x\n\n", [msg("x")], id="comments"),
    pytest.param(b"\n\n\n", [], id="blank-lines-only"),
    pytest.param(b"data: x\n", [], id="no-blank-line-not-dispatched"),
    pytest.param(b"data: x\n\ndata: y", [msg("x")], id="cut-off-by-close"),
    pytest.param(b"data: \xff\xfe\n\n", [msg("\ufffd\ufffd")], id="invalid-utf8-replaced"),
    pytest.param(b"data: a\x1cb\xe2\x80\xa8c\x0bd\x0ce\n\n", [msg("a\x1cb\u2028c\x0bd\x0ce")], id="only-cr-lf-end-lines"),
]


@pytest.mark.parametrize(("stream", "expected"), FIELD_CASES)
def test_fields(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert decode(stream) == expected


@pytest.mark.parametrize(
    ("keep_dataless", "expected"),
    [(False, []), (True, [msg("", event="done")])],
)
def test_keep_dataless(keep_dataless: bool, expected: list[ServerSentEvent]) -> None:
    assert decode(b"event: done\n\n", keep_dataless=keep_dataless) == expected


def test_keep_dataless_needs_an_event_field() -> None:
    assert decode(b"id: 3\n\nretry: 10\n\n: hi\n\n", keep_dataless=True) == []


def test_retry_attribute_is_last_valid_value() -> None:
    decoder = EventDecoder()
    assert decoder.retry is None
    decoder.feed(b"retry: 100\n\nretry: x\nretry: 2000\nretry: y\n")
    assert decoder.retry == 2000


def test_close_keeps_last_event_id_of_dispatched_events_only() -> None:
    decoder = EventDecoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    assert decoder.close() == []
    assert decoder.last_event_id == "1"  # block 2 never completed: resume from 1


def test_close_processes_unterminated_last_line() -> None:
    decoder = EventDecoder()
    decoder.feed(b"data: a\n\nretry: 30")
    assert decoder.close() == []
    assert decoder.retry == 30


def test_decoder_is_reusable_after_close() -> None:
    decoder = EventDecoder()
    decoder.feed(b"id: 9\ndata: a\n\ndata: half")
    decoder.close()
    assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == [msg("b", id="9")]


def test_empty_chunks_are_harmless() -> None:
    assert decode(b"data: a\r", b"", b"\n", b"", b"\n") == [msg("a")]


def test_long_line_in_small_chunks() -> None:
    payload = ("tok€n " * 60_000).encode()  # ~300 KB; "€" straddles some 1 KB chunk ends
    stream = b"data: " + payload + b"\r\n\r\n"
    chunks = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    assert decode(*chunks) == [msg(payload.decode())]


# --- Chunk boundaries ---------------------------------------------------------

STREAMS = {
    "lf": b"data: YHOO\ndata: +2\ndata: 10\n\n",
    "crlf": b"event: output\r\nid: 1690212292:0\r\ndata: h\xc3\xa9llo\r\n\r\n: keepalive\r\n\r\n",
    "cr": b"data: \xe2\x82\xac1\rdata:  \xf0\x9f\x98\x80\r\rid\r\rdata\r\r",
    "mixed": (
        b"\xef\xbb\xbf: hi\n\nid: 1\r\nevent: output\rdata: a\n"
        b"data:\r\ndata:\xf0\x9f\x98\x80\r\r\nretry: 10\ndata:  b\xc3\xa9\r\n\n"
        b"event: done\r\n\r\ndata: cut"
    ),
    "cr-crlf": b"data: a\r\r\ndata: b\r\n\r\r\n\n",
}


@pytest.mark.parametrize("stream", list(STREAMS.values()), ids=list(STREAMS))
def test_every_single_split(stream: bytes) -> None:
    expected = decode(stream, keep_dataless=True)
    assert expected  # the stream must mean something
    for i in range(len(stream) + 1):
        assert decode(stream[:i], stream[i:], keep_dataless=True) == expected, i


@pytest.mark.parametrize("stream", list(STREAMS.values()), ids=list(STREAMS))
def test_every_pair_of_splits(stream: bytes) -> None:
    expected = decode(stream, keep_dataless=True)
    for i, j in itertools.combinations(range(len(stream) + 1), 2):
        assert decode(stream[:i], stream[i:j], stream[j:], keep_dataless=True) == expected, (i, j)


@pytest.mark.parametrize("stream", list(STREAMS.values()), ids=list(STREAMS))
def test_one_byte_at_a_time(stream: bytes) -> None:
    expected = decode(stream, keep_dataless=True)
    assert decode(*(stream[i : i + 1] for i in range(len(stream))), keep_dataless=True) == expected


def test_split_streams_decode_as_expected() -> None:
    assert decode(STREAMS["mixed"], keep_dataless=True) == [
        msg("a\n\n😀", id="1", event="output"),
        msg(" bé", id="1", retry=10),
        msg("", id="1", event="done"),
    ]
    assert decode(STREAMS["cr"]) == [msg("€1\n 😀"), msg("")]
    assert decode(STREAMS["cr-crlf"]) == [msg("a"), msg("b")]


# --- Property: random events, line endings and chunking -----------------------

# Field values: any text without line breaks (and no leading-space ambiguity:
# the encoder always writes one separating space).
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
endings = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    text, expected, last_id = "", [], ""
    for _ in range(draw(st.integers(0, 5))):
        lines, data = [], draw(st.lists(values, min_size=1, max_size=3))
        event = draw(st.one_of(st.none(), values.filter(lambda v: "\0" not in v)))
        if event is not None:
            lines.append(f"event: {event}")
        if draw(st.booleans()):
            last_id = draw(values.filter(lambda v: "\0" not in v))
            lines.append(f"id: {last_id}")
        if draw(st.booleans()):
            lines.append(": " + draw(values))
        lines += [f"data: {d}" for d in data]
        for line in [*lines, ""]:
            ending = draw(endings)
            if not line and text.endswith("\r") and ending == "\n":
                ending = "\r\n"  # a lone LF here would merge with the CR into one line end
            text += line + ending
        expected.append(msg("\n".join(data), id=last_id, event=event or "message"))
    return text.encode(), expected


@given(streams(), st.lists(st.integers(0, 10_000), max_size=8))
def test_random_streams_random_splits(stream: tuple[bytes, list[ServerSentEvent]], cuts: list[int]) -> None:
    raw, expected = stream
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    assert decode(*chunks) == expected


# --- Limits: a line that never ends, an event that never dispatches -------------


def test_a_line_past_max_line_raises_and_drops_what_it_held() -> None:
    decoder = EventDecoder(max_line=1000)
    decoder.feed(b"data: ok\n\n")
    with pytest.raises(EventTooLarge, match="a line of more than 1000 bytes without ending it"):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 100)  # no line end, ever
    assert decoder.feed(b"data: again\n\n") == [msg("again")]  # ready for a new stream


def test_a_line_that_ends_just_past_max_line_raises_too() -> None:
    decoder = EventDecoder(max_line=10)
    decoder.feed(b"data: 1234")
    with pytest.raises(EventTooLarge):
        decoder.feed(b"5\n\n")


def test_a_line_of_exactly_max_line_passes() -> None:
    decoder = EventDecoder(max_line=10)
    decoder.feed(b"data: 1234")
    assert decoder.feed(b"\n\n") == [msg("1234")]


def test_data_lines_past_max_event_raise() -> None:
    decoder = EventDecoder(max_event=10_000)
    with pytest.raises(EventTooLarge, match="an event of more than 10000 bytes without ending it"):
        for _ in range(100):
            decoder.feed(b"data: " + b"y" * 500 + b"\n")  # lines end, the event never does


def test_empty_data_lines_count_against_max_event() -> None:
    decoder = EventDecoder(max_event=10_000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data:\n" * 1000)  # no characters, but each line costs memory


def test_max_event_counts_one_event_at_a_time() -> None:
    decoder = EventDecoder(max_event=1000)
    stream = b"".join(b"data: " + b"z" * 500 + b"\n\n" for _ in range(50))
    assert len(decode_with(decoder, stream)) == 50


def test_default_limits_take_replicates_largest_lines() -> None:
    assert EventDecoder().max_line == MAX_LINE == 16 * 1024 * 1024 and MAX_EVENT == MAX_LINE


def decode_with(decoder: EventDecoder, stream: bytes) -> list[ServerSentEvent]:
    return decoder.feed(stream) + decoder.close()
