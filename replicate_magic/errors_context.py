"""The notebook's errors as context for a prompt: ``{Err}``, ``{Err[N]}`` and ``%replicate fix``. Pure.

IPython keeps only the last exception, and not per cell. The magic's ``post_run_cell`` hook
(``notebook_context.py``) records each failing cell here: its execution count, its source as
typed and its traceback as Python formats it. This module keeps the last ``KEPT`` of them
(text only: no exception, frame or local variable stays alive) and makes the text a prompt
gets:

- the traceback without ANSI colours or any other control character (``terminal.clean``),
  the cell's temporary file named as IPython names it (``Cell In[3], line 2``);
- within ``TRACEBACK_BUDGET`` characters: a longer one keeps its head and its end (the
  innermost frames and the error itself), and a line in between says how many frames and
  characters were cut;
- an error of our own (a ``ReplicateMagicError``, an IPython ``UsageError``) as the one line
  the notebook showed.

``{Err}`` is the most recent error of a cell, leaving out those raised by ``%%replicate`` or
``%replicate`` themselves (a failed ``%replicate fix`` must not become the next one's
subject); ``{Err[N]}`` is cell ``N``'s, whatever raised it. A placeholder that names no
recorded error raises ``InvalidRequestError`` naming what is missing, so nothing is sent.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .errors import InvalidRequestError
from .terminal import clean

__all__ = ["KEPT", "SOURCE_BUDGET", "TRACEBACK_BUDGET", "CellError", "CellErrors", "ErrorLookup", "fix_prompt",
           "trimmed"]

KEPT = 50
"""Failing cells remembered, the most recent ones."""
TRACEBACK_BUDGET = 6_000
"""Characters of one traceback in a prompt (about 1,500 tokens)."""
SOURCE_BUDGET = 8_000
"""Characters of the failing cell's source that ``%replicate fix`` sends."""

# "  File "/tmp/ipykernel_7/123.py", line 2, in <module>", as traceback formats a frame (and
# a SyntaxError's location).
_FILE_LINE = re.compile(r'^(?P<indent>[ \t]*)File "(?P<file>[^"\n]*)", line (?P<line>\d+)', re.MULTILINE)
_FRAME = re.compile(r'[ \t]*(?:File "|Cell In\[)')
_NOTE_ROOM = 120  # characters kept free for the line that says what was cut


@dataclass(frozen=True)
class CellError:
    """One failing cell: ``In[count]``, what the user typed there, and the error as text.

    ``traceback`` is already clean and within its budget; for an error of our own it is the
    error's one line. ``from_magic``: raised by ``%%replicate``/``%replicate`` itself.
    """

    count: int
    source: str
    name: str  # the exception's type as Python prints it: "ZeroDivisionError", "json.decoder.JSONDecodeError"
    message: str
    traceback: str
    one_line: bool = False
    from_magic: bool = False

    @property
    def headline(self) -> str:
        """``Type: message``, as the last line of a traceback says it."""
        return f"{self.name}: {self.message}" if self.message else self.name

    @property
    def cell(self) -> str:
        return f"In[{self.count}]"


def cell_error(count: int, source: str, name: str, message: str, parts: Sequence[str], *,
               label: Callable[[str], str | None] = lambda file: None, one_line: bool = False,
               from_magic: bool = False, budget: int = TRACEBACK_BUDGET) -> CellError:
    """A ``CellError`` from a traceback as ``traceback.TracebackException.format`` yields it.

    Every part is cleaned of control characters; ``label`` names a file (a cell's temporary
    file: ``"Cell In[3]"``), None leaves it as it is. With ``one_line``, the traceback is the
    headline alone, as the notebook showed it.
    """
    name, message = clean(name), clean(message)
    if one_line:
        text = _cut_middle(f"{name}: {message}" if message else name, budget)
    else:
        text = trimmed([relabel(clean(part), label) for part in parts], budget)
    return CellError(count, source, name, message, text, one_line=one_line, from_magic=from_magic)


def relabel(text: str, label: Callable[[str], str | None]) -> str:
    """``File "<path>", line 2`` as ``Cell In[3], line 2`` where ``label`` names the path."""

    def named(match: re.Match[str]) -> str:
        name = label(match["file"])
        return f"{match['indent']}{name}, line {match['line']}" if name else match.group()

    return _FILE_LINE.sub(named, text)


def trimmed(parts: Sequence[str], budget: int = TRACEBACK_BUDGET) -> str:
    """The parts joined, within ``budget`` characters.

    Whole when it fits. Else the head (up to a quarter of the budget: "Traceback (most
    recent call last):" and the outermost frames) and the end (the innermost frames, the
    error itself), and in between one line saying how many frames and characters were cut.
    An error line longer than the room left keeps its start and its end.
    """
    whole = "".join(parts)
    if len(whole) <= budget:
        return whole.rstrip("\n")
    room = max(budget - _NOTE_ROOM, 2)
    head: list[str] = []
    used = 0
    for part in parts[:-1]:
        if used + len(part) > room // 4:
            break
        head.append(part)
        used += len(part)
    rest = list(parts[len(head):])
    left = room - used
    last = rest.pop()  # the error itself ("Type: message"), always kept
    if len(last) > left:  # a huge message: its start and its end, leaving room for frames
        last = _cut_middle(last.rstrip("\n"), max(left // 2, 1)) + "\n"
    left -= len(last)
    tail = [last]
    for part in reversed(rest):  # then the innermost frames, as many as fit
        if len(part) > left:
            break
        tail.append(part)
        left -= len(part)
    tail.reverse()
    cut = rest[: len(rest) - (len(tail) - 1)]
    return ("".join(head) + _cut_note(cut) + "".join(tail)).rstrip("\n")


def _cut_note(cut: Sequence[str]) -> str:
    if not cut:
        return ""
    frames = sum(1 for part in cut if _FRAME.match(part))
    chars = sum(len(part) for part in cut)
    what = f"{frames} frame{'' if frames == 1 else 's'} ({chars:,} characters)" if frames else f"{chars:,} characters"
    return f"  [… {what} cut here to fit the prompt …]\n"


def _cut_middle(text: str, budget: int) -> str:
    """``text``, or its start and its end within ``budget`` characters, saying how much was cut."""
    if len(text) <= budget:
        return text
    keep = max(budget - 60, 2)
    cut = len(text) - keep
    return f"{text[: keep // 2]} [… {cut:,} characters cut …] {text[len(text) - (keep - keep // 2):]}"


class CellErrors:
    """The last ``kept`` failing cells, in the order they ran."""

    def __init__(self, kept: int = KEPT) -> None:
        self._errors: deque[CellError] = deque(maxlen=kept)
        self.kept = kept
        self.dropped = 0  # errors forgotten to keep the bound

    def record(self, error: CellError) -> None:
        if len(self._errors) == self.kept:
            self.dropped += 1
        self._errors.append(error)

    def __len__(self) -> int:
        return len(self._errors)

    def __iter__(self) -> Iterator[CellError]:
        return iter(self._errors)

    def latest(self) -> CellError | None:
        """The most recent error of a cell, leaving out those that ``%replicate`` raised itself."""
        return next((e for e in reversed(self._errors) if not e.from_magic), None)

    def of_cell(self, count: int) -> CellError | None:
        return next((e for e in reversed(self._errors) if e.count == count), None)

    def missing(self, count: int, running: int | None = None) -> str:
        """Why cell ``count`` has no error here, in words: not run yet, forgotten, or it did not fail."""
        if count < 1:
            return "cells are numbered from 1 (In[1], In[2], ...)"
        if running is not None and count >= running:
            return "that is this cell" if count == running else f"cell In[{count}] has not run yet"
        if self.dropped and self._errors and count < self._errors[0].count:
            return f"the errors before In[{self._errors[0].count}] are no longer kept (the last {self.kept} are)"
        recent = [e.cell for e in self._errors][-5:]
        known = f"; errors are kept for {', '.join(recent)}" if recent else "; no cell has failed yet"
        return f"cell In[{count}] raised no error (since replicate_magic was loaded){known}"

    def none_yet(self) -> str:
        if self._errors:  # only %replicate's own
            return "no cell has failed except %replicate ones (use {Err[N]} or %replicate fix N for those)"
        return "no cell has failed yet (since replicate_magic was loaded)"


class ErrorLookup:
    """``Err`` in a prompt's namespace: ``{Err}`` is the most recent error's traceback,
    ``{Err[3]}`` cell 3's; when there is none, both raise ``InvalidRequestError`` saying why.

    ``running`` is the count of the cell being run (``Err[N]`` at or after it has not failed yet).
    """

    def __init__(self, errors: CellErrors, running: int | None = None) -> None:
        self._errors = errors
        self._running = running

    def __getitem__(self, count: int) -> str:
        error = self._errors.of_cell(count)
        if error is None:
            why = self._errors.missing(count, self._running)
            raise InvalidRequestError(f"{{Err[{count}]}}: {why}; nothing was sent.")
        return error.traceback

    def _placeholder_text_(self) -> str:  # {Err}: prompt_template asks for it outside code only
        error = self._errors.latest()
        if error is None:
            raise InvalidRequestError(f"{{Err}}: {self._errors.none_yet()}; nothing was sent.")
        return error.traceback

    def __repr__(self) -> str:
        return f"<the errors of {len(self._errors)} cells: {{Err}}, {{Err[N]}}>"


def fix_prompt(error: CellError, source_budget: int = SOURCE_BUDGET) -> str:
    """What ``%replicate fix`` asks: explain cell ``error.count``'s error given its source and
    traceback, then the whole corrected cell in one fenced code block."""
    source = _cut_lines(error.source.strip("\n"), source_budget)
    info = "" if error.source.lstrip().startswith("%%") else "python"  # a cell magic's body is not Python
    return (
        f"Cell {error.cell} of my Jupyter notebook failed with {error.name}. Explain the cause in a few "
        "sentences, then propose a fix: the whole corrected cell in one fenced code block.\n\n"
        f"The cell:\n\n{_fenced(source, info)}\n\nThe error:\n\n{_fenced(error.traceback, 'text')}\n"
    )


def _fenced(text: str, info: str) -> str:
    """A fenced block holding ``text`` as it is: its fence longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _cut_lines(text: str, budget: int) -> str:
    """``text``, or its first and last lines within ``budget`` characters (taken in turn from
    each end), with a line saying how many were cut in between."""
    if len(text) <= budget:
        return text
    lines = text.split("\n")
    left = budget - _NOTE_ROOM
    first, last = 0, len(lines)  # kept: lines[:first] and lines[last:]
    from_head = True
    while first < last:
        cost = len(lines[first if from_head else last - 1]) + 1
        if cost > left:
            break
        left -= cost
        if from_head:
            first += 1
        else:
            last -= 1
        from_head = not from_head
    if first == 0:  # even the first line is too long
        return _cut_middle(text, budget)
    return "\n".join([*lines[:first], f"# [… {last - first:,} lines cut here to fit the prompt …]", *lines[last:]])
