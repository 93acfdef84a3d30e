"""Tests for replicate_magic.terminal: hostile text loses its control sequences before a terminal.

Unit tests of the sanitizer (each sequence, every chunk boundary, the length cap, a property
test), then the real thing: the CLI and terminal IPython run as subprocesses against the
emulator, with replies that carry the sequences, split across stream tokens.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicate_magic.emulator import Faults
from replicate_magic.terminal import STRING_LIMIT, TerminalSanitizer, clean

BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def forbidden(text: str) -> list[str]:
    """The characters a terminal must never get from us."""
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c in BIDI]


def fed(text: str, *cuts: int) -> str:
    """``text`` through one sanitizer, cut into chunks at ``cuts``."""
    sanitizer = TerminalSanitizer()
    bounds = [0, *cuts, len(text)]
    return "".join(sanitizer.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + sanitizer.flush()


# Each sequence between visible words: the sequence goes, "before" and "after" stay.
SEQUENCES = [
    pytest.param("\x1b[2J\x1b[H", id="clear-screen-and-home"),
    pytest.param("\x1bc", id="full-reset-RIS"),
    pytest.param("\x1b]0;owned\x07", id="window-title-OSC0-BEL"),
    pytest.param("\x1b]2;owned\x1b\\", id="window-title-OSC2-ST"),
    pytest.param("\x1b]52;c;cHduZWQ=\x07", id="clipboard-OSC52"),
    pytest.param("\x1b]52;c;cHduZWQ=\x9c", id="clipboard-OSC52-C1-ST"),
    pytest.param("\x1b]8;;https://evil.example/\x1b\\", id="hyperlink-OSC8-open"),
    pytest.param("\x1b[8m", id="hidden-SGR8"),
    pytest.param("\x1b[1;31;48;5;196m", id="colours-SGR"),
    pytest.param("\x1b[5A\x1b[2K\x1b[10;20H\x1b[?25l", id="cursor-movement-and-erase"),
    pytest.param("\x1b7\x1b8\x1bM", id="save-restore-reverse-index"),
    pytest.param("\x1b(0\x1b#8", id="charset-and-alignment-with-intermediates"),
    pytest.param("\x1bP1$r0m\x1b\\", id="DCS"),
    pytest.param("\x1b_Gf=24;AAAA\x1b\\", id="APC-kitty-graphics"),
    pytest.param("\x1b^privacy message\x1b\\", id="PM"),
    pytest.param("\x1bXstart of string\x1b\\", id="SOS"),
    pytest.param("\x9b2J", id="8-bit-CSI"),
    pytest.param("\x9d0;owned\x07", id="8-bit-OSC"),
    pytest.param("\x90q#0;2;0;0;0\x9c", id="8-bit-DCS"),
    pytest.param("\x9f APC \x9c\x9e PM \x9c\x98 SOS \x9c", id="8-bit-APC-PM-SOS"),
    pytest.param("\x85\x84\x8d\x9a\x80\x9c", id="other-C1"),
    pytest.param("\x00\x07\x08\x7f\x0b\x0c\x0e\x0f\x18\x1a\x1c\x1f", id="C0-and-DEL"),
    pytest.param("\u202e\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069", id="bidi-controls"),
    pytest.param("\x1b]0;title\x1b[2J", id="string-cut-short-by-a-new-sequence"),
    pytest.param("\x1b[12\x18", id="CSI-cancelled-by-CAN"),
    pytest.param("\x1b\x1b\x1b[m", id="repeated-ESC"),
]


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_each_sequence_is_removed_and_the_text_around_it_stays(sequence: str) -> None:
    assert clean(f"before{sequence}after") == "beforeafter"


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_every_split_into_two_chunks_gives_the_same_text(sequence: str) -> None:
    text = f"before {sequence} after\r\n"
    whole = clean(text)
    for cut in range(len(text) + 1):
        assert fed(text, cut) == whole, cut
    assert fed(text, *range(1, len(text))) == whole  # one character at a time


def test_hidden_text_and_link_text_become_plain_text() -> None:
    assert clean("see \x1b[8msecret\x1b[28m here") == "see secret here"
    link = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    assert clean(f"[{link}]") == "[click]"


def test_line_ends() -> None:
    assert clean("a\r\nb\nc\td") == "a\nb\nc\td"
    assert clean("10%\r20%") == "10%\n20%"  # a lone CR cannot overwrite the line: it is a new line
    assert clean("a\r\r\nb") == "a\n\nb"
    sanitizer = TerminalSanitizer()
    assert sanitizer.feed("a\r") == "a\n"  # shown at once, not held back for a possible LF
    assert sanitizer.feed("\nb") == "b"


def test_ordinary_text_is_unchanged() -> None:
    text = "Plain text,\ttabs and lines\n— é 😀 中文 עברית ﷺ \u200b [1] {x} \\ ~ `code`"
    assert clean(text) == text


def test_state_survives_chunks_and_nothing_printable_is_held_back() -> None:
    sanitizer = TerminalSanitizer()
    assert sanitizer.feed("Hello \x1b]52;c;") == "Hello "
    assert sanitizer.feed("cHduZWQ=") == ""
    assert sanitizer.feed("ZWQ=\x1b") == ""
    assert sanitizer.feed("\\world") == "world"
    assert sanitizer.feed("\x1b[") == ""
    assert sanitizer.feed("31") == ""
    assert sanitizer.feed("mred") == "red"


def test_flush_drops_an_open_sequence_and_resets() -> None:
    sanitizer = TerminalSanitizer()
    assert sanitizer.feed("end\x1b]0;never closed") == "end"
    assert sanitizer.flush() == ""
    assert sanitizer.feed("next stream") == "next stream"


def test_a_character_that_cannot_continue_a_sequence_is_text() -> None:
    assert clean("a\x1béb") == "aéb"  # ESC before a non-ASCII letter: the ESC goes
    assert clean("a\x1b[1\nb") == "a\nb"  # the CSI is abandoned at the newline, which is kept
    assert clean("a\x1b(\u202eb") == "ab"  # abandoned, and the bidi control is dropped as text


def test_an_unterminated_string_hides_at_most_the_limit() -> None:
    body = "0;" + "x" * 10_000
    text = f"\x1b]{body}VISIBLE"
    expected = body[STRING_LIMIT:] + "VISIBLE"
    assert clean(text) == expected
    assert fed(text, *range(7, len(text), 7)) == expected  # the count survives chunks
    # A CSI whose parameters never end is bounded the same way.
    assert clean("\x1b[" + "1" * (STRING_LIMIT + 10) + "m!") == "1" * 10 + "m!"
    # A terminator right after the limit is not a way to hide more: it is dropped as text.
    assert clean("\x1b]" + "x" * STRING_LIMIT + "\x07after") == "after"


def test_a_string_that_ends_in_time_hides_its_whole_body() -> None:
    assert clean("\x1b]" + "x" * (STRING_LIMIT - 1) + "\x07after") == "after"


def test_long_text_is_linear() -> None:
    text = ("word \x1b[1m" * 20_000) + ("\x1b]0;" + "y" * 100 + "\x07") * 2_000
    assert clean(text) == "word " * 20_000


# -- properties ------------------------------------------------------------------------------

FRAGMENTS = [
    "\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b_", "\x1b^", "\x1bX", "\x1b\\", "\x1b(", "\x1b#",
    "\x9b", "\x9d", "\x90", "\x9c", "\x9f", "\x07", "\x18", "\x1a", "\r", "\r\n", "\n", "\t",
    ";", "52", "0", "8", "2J", "m", "?25l", "c;", "https://evil.example/", " ", "word",
    "\u202e", "\u2066", "\x00", "\x7f", "\x08", "é", "😀",
]
hostile_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(max_size=8),
        st.characters(max_codepoint=0xA0),
        st.sampled_from(sorted(BIDI)),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(hostile_text, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_no_control_character_ever_comes_out(text: str, cuts: list[int]) -> None:
    cleaned = clean(text)
    assert forbidden(cleaned) == []
    assert fed(text, *sorted(min(c, len(text)) for c in cuts)) == cleaned  # chunking never matters
    assert clean(cleaned) == cleaned  # what comes out is plain text already


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_text_without_controls_passes_unchanged(text: str) -> None:
    text = "".join(c for c in text if c not in BIDI)
    assert clean(text) == text


def test_the_forbidden_set_covers_every_control_character() -> None:
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]
    assert set(controls) - {"\n", "\t"} == {c for c in controls if forbidden(c)}
    assert forbidden(clean("".join(controls) + "".join(sorted(BIDI)))) == []


# -- real terminals: the CLI and terminal IPython against the emulator -------------------------

# A reply whose tokens carry the sequences, several of them split across tokens.
HOSTILE_TOKENS = [
    "Hello", " \x1b]52;c;", "cHduZWQ=", "\x07world", " \x1b[2", "J\x1b[Hcleared",
    " \x1b]0;pwned-title\x1b", "\\titled", " \x9b31", "mred\x1b[0m", " \x1bP1$r", "dcs-body\x1b\\dcs",
    "\r\n", "line\rover", " \u202eevil\u202c", " \x1b[8mhidden\x1b[28m",
    " \x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\", " bell\x07\x08\x7f\x00", " \x9d2;t\x9c", "end",
]
WORDS = ["Hello", "world", "cleared", "titled", "red", "dcs", "line", "over", "evil", "hidden", "link",
         "bell", "end"]
LEAKS = ["cHduZWQ=", "52;c", "pwned-title", "dcs-body", "evil.example", "\x1b", "[2J", "31m"]


def assert_clean_terminal_output(raw: bytes) -> str:
    text = raw.decode("utf-8")
    assert forbidden(text) == [], [hex(ord(c)) for c in forbidden(text)]
    for leak in LEAKS:
        assert leak not in text
    for word in WORDS:
        assert word in text
    return text


@pytest.fixture
def hostile_emu(env_emu):
    env_emu.inject(Faults(tokens=HOSTILE_TOKENS))
    return env_emu


def test_cli_stdout_carries_no_control_sequences(hostile_emu) -> None:
    result = subprocess.run([sys.executable, "-m", "replicate_magic", "Hi"], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    text = assert_clean_terminal_output(result.stdout)
    # The visible text is exactly the sanitized reply, newline-ended.
    assert text == clean("".join(HOSTILE_TOKENS)) + "\n"
    assert forbidden(result.stderr.decode()) == []  # the metrics line


def test_cli_error_line_carries_no_control_sequences(env_emu) -> None:
    env_emu.inject(Faults(tokens=["partial", " answer"], error_after=1,
                          error_message="GPU \x1b]0;pwned-title\x07melted\x1b[2J\r\x9b31m now"))
    result = subprocess.run([sys.executable, "-m", "replicate_magic", "Hi"], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert forbidden(stderr) == [] and "pwned-title" not in stderr
    assert "GPU melted" in stderr and "now" in stderr
    assert forbidden(result.stdout.decode()) == []


def test_terminal_ipython_stdout_carries_no_control_sequences(hostile_emu, tmp_path: Path) -> None:
    code = "%load_ext replicate_magic\nget_ipython().run_cell_magic('replicate', '--no-history', 'Hi')\n"
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "TERM": "xterm-256color"}
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=nocolor", "-c", code],
        capture_output=True, timeout=60, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    text = assert_clean_terminal_output(result.stdout)
    assert clean("".join(HOSTILE_TOKENS)) in text
