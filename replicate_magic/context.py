"""Notebook values as prompt text, within a budget: ``{df}`` and ``--context NAME``. Pure.

A pandas DataFrame becomes a description: its shape, its columns and their dtypes, its first
rows as a Markdown table, and a numeric summary when that fits too, saying what was left out
("(999,995 more rows)", "(12 more columns)"). A Series likewise. Only the cells shown are
formatted (never ``to_string()`` of the whole frame), so a frame of a million rows is described
in milliseconds. A list, tuple, dict or set is written out element by element until the budget
is spent, then says how many elements it left out; a long string is cut with a note; anything
else is its ``str()`` (for ``{name}``) or ``repr()`` (for ``--context``), cut likewise.

The budget is in tokens, ``context_budget`` (2,000 by default), and counted here as characters:
``CHARS_PER_TOKEN`` (4) characters a token, the usual average of English prose and tables under
the Llama and GPT tokenizers. Digits, code and most other languages take more tokens per
character, so a description may cost up to about twice its budget in real tokens; it never
exceeds its budget in characters.

pandas is never imported: its objects are recognised by their type's module and name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError

__all__ = ["CHARS_PER_TOKEN", "Describer", "context_block", "describe"]

CHARS_PER_TOKEN = 4  # the approximation: see the module's docstring
_ROWS = 5  # rows a frame's table shows at most ("a few rows")
_TABLE_COLUMNS = 12  # columns its table shows at most, besides the index
_CELL = 40  # characters of one table cell at most
_SUMMARY_COLUMNS = 8  # numeric columns the summary covers at most
_DEPTH = 12  # nesting levels written out in a list or dict; deeper ones are elided
_MORE = 40  # characters kept free for a "(N more ...)" note


def is_pandas(value: Any, kind: str) -> bool:
    """A pandas ``DataFrame`` or ``Series`` (``kind``), told by its type: pandas is never imported."""
    return type(value).__module__.startswith("pandas") and type(value).__name__ == kind


def describe(value: Any, limit: int, *, style: str = "str") -> str:
    """``value`` as prompt text of at most ``limit`` characters.

    ``style`` is how other values are written: ``"str"`` as ``{name}`` puts them (``str()``,
    containers as Python writes them), ``"json"`` as ``--context`` does (containers as JSON
    where they can be, ``repr()`` for the rest). Exceptions of the value's own ``str``,
    ``repr`` or pandas methods propagate: the caller names the variable.
    """
    limit = max(limit, 1)
    if is_pandas(value, "DataFrame"):
        text = _frame(value, limit)
    elif is_pandas(value, "Series"):
        text = _series(value, limit)
    elif type(value) in _CONTAINERS:
        text = _Writer(limit, json_style=style == "json").container(value)
    elif isinstance(value, str):
        text = _cut(value, limit)
    else:
        text = _cut(repr(value) if style == "json" else str(value), limit)
    return _clamp(text, limit)


# -- {name} in a prompt -------------------------------------------------------------------------


@dataclass
class Describer:
    """The ``describe`` callback ``prompt_template.expand`` takes, for one prompt: a DataFrame or
    Series becomes its description, a value longer than ``limit`` characters is cut, anything
    else is ``str()`` as before. It remembers what it shortened (for the line under the reply)
    and what failed (``failed``: the placeholder and the reason, for a one-line error).
    ``verbatim`` placeholders (a template's ``{input}``), and ``{Err}``/``{Err[n]}``, are put as
    they are, whatever their length.
    """

    limit: int
    verbatim: Collection[str] = ()
    described: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, written: str, value: Any) -> str:
        try:
            # {Err} texts are cut to their own budget already, keeping the traceback's end (errors_context).
            if written in self.verbatim or written.startswith(("{Err}", "{Err[")):
                return str(value)
            if is_pandas(value, "DataFrame") or is_pandas(value, "Series"):
                text = describe(value, self.limit)
                _add(self.described, written)
                return text
            if type(value) in _CONTAINERS:
                writer = _Writer(self.limit, json_style=False)
                text = writer.container(value)
                if writer.cut:
                    _add(self.trimmed, written)
                return text
            text = str(value)
        except Exception as error:
            if written not in (w for w, _ in self.failed):
                self.failed.append((written, _reason(error)))
            raise
        if len(text) <= self.limit:
            return text
        _add(self.trimmed, written)
        return _clamp(_cut(text, self.limit), self.limit)

    def notes(self) -> tuple[str, ...]:
        """What the line under the reply says about it, if anything."""
        notes = []
        if self.described:
            notes.append(f"described within the context budget: {', '.join(self.described)}")
        if self.trimmed:
            notes.append(f"cut to the context budget: {', '.join(self.trimmed)}")
        return tuple(notes)

    def check(self) -> None:
        """One line for the first placeholder whose value could not be written; else nothing."""
        if self.failed:
            written, reason = self.failed[0]
            raise InvalidRequestError(
                f"Cannot put {written} in the prompt: writing it out raised {reason}; nothing was sent. "
                f"Fix its __str__, or write {{{written}}} for the text {written}.")


def _add(names: list[str], written: str) -> None:
    if written not in names:
        names.append(written)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- --context NAME -----------------------------------------------------------------------------


def context_block(names: Iterable[str], namespace: Mapping[str, Any], limit: int, *,
                  token: str | None = None) -> str:
    """The text ``--context`` adds after the prompt: each variable under its name, described
    within ``limit`` characters each. A missing variable, one that cannot be written out, or
    one whose text holds the API ``token`` is one ``InvalidRequestError`` line naming it."""
    parts = []
    for name in names:
        if name not in namespace:
            raise InvalidRequestError(f"--context {name}: no variable {name!r} in the notebook; define it first. "
                                      "Nothing was sent.")
        value = namespace[name]
        try:
            label, body = _labelled(name, value, limit)
        except Exception as error:
            raise InvalidRequestError(f"--context {name}: writing it out raised {_reason(error)}; "
                                      "nothing was sent.") from None
        part = f"{label}\n{body}"
        if token and token in part:
            raise InvalidRequestError(f"--context {name}: its value holds the API token, which is never sent; "
                                      "nothing was sent.")
        parts.append(part)
    return "\n\n".join(parts)


def _labelled(name: str, value: Any, limit: int) -> tuple[str, str]:
    """The heading of a context variable and its body, together within ``limit`` characters
    (when the heading alone fits): a frame's description, else the value in a fence."""
    if is_pandas(value, "DataFrame") or is_pandas(value, "Series"):
        label = f"Variable `{name}`:"
        return label, describe(value, limit - len(label) - 1)
    kind = type(value).__name__
    if isinstance(value, str):
        label = f"Variable `{name}` (str, {len(value):,} characters):"
    elif type(value) in _CONTAINERS:
        unit = ("key" if isinstance(value, dict) else "item") + ("" if len(value) == 1 else "s")
        label = f"Variable `{name}` ({kind}, {len(value):,} {unit}):"
    else:
        label = f"Variable `{name}` ({kind}):"
    info = "json" if type(value) in _CONTAINERS else ""
    room = limit - len(label) - 1 - 2 * 4 - len(info) - 2  # two fence lines of at least 3 backticks
    for _ in range(2):  # a body holding a long run of backticks needs a longer fence: shrink it once
        body = _cut(value, max(room, 1)) if isinstance(value, str) else describe(value, max(room, 1), style="json")
        fence = "`" * max(3, _longest_run(body, "`") + 1)
        block = f"{fence}{info}\n{body}\n{fence}"
        over = len(label) + 1 + len(block) - limit
        if over <= 0:
            break
        room -= over
    return label, block


def _longest_run(text: str, char: str) -> int:
    runs = re.findall(re.escape(char) + "+", text)
    return max((len(run) for run in runs), default=0)


# -- strings ------------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    """``text``, or its start and a note of how much was left out, within ``limit`` characters."""
    if len(text) <= limit:
        return text
    note = f"\n[… {len(text):,} characters in all; the rest is not shown]"
    keep = max(limit - len(note), 0)
    return text[:keep] + note


def _clamp(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _one_line(value: Any, most: int = _CELL) -> str:
    """A table cell: one line, pipes escaped, at most ``most`` characters."""
    try:
        text = str(value)
    except Exception:
        text = "?"
    text = " ".join(text.split())
    if len(text) > most:
        text = text[: most - 1] + "…"
    return text.replace("|", "\\|")


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}" + ("" if n == 1 else "s")


# -- DataFrames and Series ------------------------------------------------------------------------


def _frame(df: Any, limit: int) -> str:
    rows, cols = (int(n) for n in df.shape)
    parts = [f"pandas DataFrame: {_count(rows, 'row')} x {_count(cols, 'column')}"]
    used = len(parts[0])

    # Columns and dtypes: as many as a third of the budget holds.
    columns = list(df.columns[:200])
    dtypes = list(df.dtypes.iloc[:200])
    listed: list[str] = []
    room = max(limit // 3, 60) - len("columns: ")
    for column, dtype in zip(columns, dtypes, strict=True):
        entry = f"{_one_line(column)} ({dtype})"
        if sum(len(e) + 2 for e in listed) + len(entry) > room - _MORE:
            break
        listed.append(entry)
    if listed:
        line = "columns: " + ", ".join(listed)
        if len(listed) < cols:
            line += f" ({_count(cols - len(listed), 'more column')})"
        parts.append(line)
    used += sum(len(p) + 2 for p in parts[1:])

    # The first rows, as a table of the first columns that fit.
    shown_rows = min(rows, _ROWS)
    shown_cols = min(cols, _TABLE_COLUMNS)
    head = df.iloc[:shown_rows, :shown_cols]
    index = [_one_line(label) for label in head.index]
    header = [_one_line(c) for c in head.columns]
    cells = [[_one_line(v) for v in head.iloc[:, j].tolist()] for j in range(shown_cols)]
    table = ""
    # The largest table that fits: a few rows first (up to 3), then as many columns, then more rows.
    shapes = sorted(((r, c) for r in range(shown_rows + 1) for c in range(shown_cols + 1)),
                    key=lambda shape: (min(shape[0], 3), shape[1], shape[0]), reverse=True)
    for n_rows, n_cols in shapes:
        candidate = _table(_index_name(df), index[:n_rows], header[:n_cols], [c[:n_rows] for c in cells[:n_cols]])
        left = _left_out(rows - n_rows, cols - n_cols)
        if used + len(candidate) + len(left) + 4 <= limit:
            table = candidate + ("\n" + left if left else "")
            break
    if not table:  # not even the header fits
        table = _left_out(rows, cols)
    parts.append(table)
    used += len(table) + 2

    summary = _summary(df, cols, limit - used - 2)
    if summary:
        parts.append(summary)
    return "\n\n".join(parts)


def _series(series: Any, limit: int) -> str:
    count = len(series)
    name = "" if series.name is None else f" {_one_line(series.name)!r}"
    parts = [f"pandas Series{name}: {_count(count, 'value')}, dtype {series.dtype}"]
    used = len(parts[0])
    shown = min(count, _ROWS)
    head = series.iloc[:shown]
    index = [_one_line(label) for label in head.index]
    values = [_one_line(v) for v in head.tolist()]
    table = ""
    for n in range(shown, -1, -1):
        candidate = _table(_index_name(series), index[:n], ["value"], [values[:n]])
        left = f"({_count(count - n, 'more value')})" if count > n else ""
        if used + len(candidate) + len(left) + 4 <= limit:
            table = candidate + ("\n" + left if left else "")
            break
    parts.append(table or f"({count:,} values not shown)")
    used += len(parts[-1]) + 2
    if _numeric(series.dtype):
        stats = _stats(series)
        if stats:
            summary = "summary: " + ", ".join(f"{k} {v}" for k, v in stats)
            if used + len(summary) + 2 <= limit:
                parts.append(summary)
    return "\n\n".join(parts)


def _index_name(data: Any) -> str:
    name = getattr(data.index, "name", None)
    return "" if name is None else _one_line(name)


def _table(corner: str, index: list[str], header: list[str], columns: list[list[str]]) -> str:
    """A Markdown table: the index as its first column, then ``columns`` (lists of cells)."""
    head = [corner, *header]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, label in enumerate(index):
        lines.append("| " + " | ".join([label, *(column[i] for column in columns)]) + " |")
    return "\n".join(lines)


def _left_out(rows: int, cols: int) -> str:
    what = []
    if rows > 0:
        what.append(_count(rows, "more row"))
    if cols > 0:
        what.append(_count(cols, "more column"))
    return f"({', '.join(what)})" if what else ""


def _numeric(dtype: Any) -> bool:
    return getattr(dtype, "kind", "") in ("i", "u", "f")


def _summary(df: Any, cols: int, room: int) -> str:
    """count, mean, std, min and max of the first numeric columns, as a table, if it fits."""
    if room < 40:
        return ""
    numeric = [j for j, dtype in enumerate(df.dtypes.iloc[:200]) if _numeric(dtype)][:_SUMMARY_COLUMNS]
    found = []
    for j in numeric:
        stats = _stats(df.iloc[:, j])
        if stats:
            found.append((_one_line(df.columns[j]), stats))
    for n in range(len(found), 0, -1):
        names = [name for name, _ in found[:n]]
        rows = [[value for _, value in stats] for _, stats in found[:n]]
        labels = [k for k, _ in found[0][1]]
        text = "numeric summary:\n" + _table("", labels, names, rows)
        if n < len(found):
            text += f"\n({len(found) - n} more numeric columns)"
        if len(text) <= room:
            return text
    return ""


def _stats(column: Any) -> list[tuple[str, str]]:
    """The summary figures of one numeric column (O(n), vectorised); [] when pandas fails on it."""
    try:
        figures = [("count", column.count()), ("mean", column.mean()), ("std", column.std()),
                   ("min", column.min()), ("max", column.max())]
    except Exception:
        return []
    return [(k, _number(v)) for k, v in figures]


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _one_line(value, 16)
    if math.isnan(number):
        return "nan"
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:,.6g}"


# -- lists, tuples, dicts, sets -------------------------------------------------------------------

_CONTAINERS: frozenset[type] = frozenset({list, tuple, dict, set, frozenset})


class _Writer:
    """Writes a container element by element until ``limit`` characters are spent, then notes
    how many elements it left out: ``[1, 2, … (999,998 more items)]``. In the ``str`` style a
    container that fits is written exactly as ``str()`` writes it; in the JSON style as JSON
    where JSON can say it (lists for tuples and sets, ``repr`` for other leaves)."""

    def __init__(self, limit: int, *, json_style: bool) -> None:
        self.limit = limit
        self.json = json_style
        self.cut = False
        self._path: set[int] = set()

    def container(self, value: Any) -> str:
        return self._value(value, self.limit, 0)

    def _value(self, value: Any, room: int, depth: int) -> str:
        if type(value) in _CONTAINERS:
            return self._container(value, room, depth)
        return self._leaf(value, room)

    def _leaf(self, value: Any, room: int) -> str:
        if isinstance(value, str):
            keep = max(room - _MORE, 8)
            if len(value) > keep:
                self.cut = True
                start = json.dumps(value[:keep], ensure_ascii=False) if self.json else repr(value[:keep])
                return f"{start}… ({len(value):,} characters)"
            return json.dumps(value, ensure_ascii=False) if self.json else repr(value)
        if self.json and (value is None or isinstance(value, (bool, int, float))):
            return json.dumps(value)
        text = repr(value)
        if len(text) > max(room, 8):
            self.cut = True
            return _clamp(text, max(room, 8))
        return text

    def _container(self, value: Any, room: int, depth: int) -> str:
        is_dict = isinstance(value, dict)
        if self.json:
            opening, closing = ("{", "}") if is_dict else ("[", "]")
        elif is_dict:
            opening, closing = "{", "}"
        elif isinstance(value, list):
            opening, closing = "[", "]"
        elif isinstance(value, tuple):
            opening, closing = "(", ")"
        elif not value:  # str() of an empty set
            return f"{type(value).__name__}()"
        else:
            opening, closing = ("{", "}") if isinstance(value, set) else ("frozenset({", "})")
        if id(value) in self._path:  # it holds itself
            return f"{opening}...{closing}"
        if depth >= _DEPTH:
            self.cut = True
            return f"{opening}…{closing}"
        self._path.add(id(value))
        try:
            items: Iterable[Any] = value.items() if is_dict else value
            pieces: list[str] = []
            used = len(opening) + len(closing)
            total = len(value)
            for done, item in enumerate(items):
                if is_dict:
                    key, child = item
                    key_text = self._key(key)
                    prefix = key_text + ": "
                else:
                    child, prefix = item, ""
                reserve = _MORE if done + 1 < total else 0  # room for "(N more items)" unless it is the last
                left = room - used - len(prefix) - (2 if pieces else 0) - reserve
                if left < 4:
                    pieces.append(self._more(total - done, is_dict))
                    break
                text = prefix + self._value(child, left, depth + 1)
                if used + len(text) + 2 > room - reserve:
                    pieces.append(self._more(total - done, is_dict))
                    break
                pieces.append(text)
                used += len(text) + 2
        finally:
            self._path.discard(id(value))
        inner = ", ".join(pieces)
        if isinstance(value, tuple) and len(pieces) == 1 and not self.json and total == 1:
            inner += ","  # str((1,)) is "(1,)"
        return f"{opening}{inner}{closing}"

    def _key(self, key: Any) -> str:
        if self.json:
            return json.dumps(key if isinstance(key, str) else repr(key), ensure_ascii=False)
        return repr(key)

    def _more(self, count: int, is_dict: bool) -> str:
        self.cut = True
        unit = "key" if is_dict else "item"
        return f"… ({count:,} more {unit}{'' if count == 1 else 's'})"

