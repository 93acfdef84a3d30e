"""``{name}`` expansion in a prompt, outside code only. Pure: no I/O, no IPython.

The rule: outside code, ``{name}`` becomes ``str()`` of that variable, ``{In[n]}`` the text
of input ``In[n]`` and ``{Out[n]}`` the value ``Out[n]`` (negative ``n`` works where Python
allows it), and a placeholder written with doubled braces (``{{name}}``, ``{{In[2]}}``)
becomes itself with single braces, unexpanded. Code, as CommonMark defines it, is never
changed: fenced blocks (``` or ~~~, also in list items and quotes, an unclosed fence running
to the end of its container) with their info string, indented blocks and inline code spans
keep every brace as typed. A placeholder also stays as typed when the name is not defined,
the entry does not exist or ``str()`` fails, and it is withheld (kept as typed and reported)
when its value equals or contains the API token. Any other brace (JSON and LaTeX, doubled or
not, ``{ x }``, ``{a.b}``) stays as typed, and a value is never expanded again.

``{Err}`` and ``{Err[n]}`` (the notebook's errors, ``errors_context.ErrorLookup``) are looked up
like ``{name}`` and ``{Out[n]}``; a value whose type has ``_placeholder_text_()`` is worked out
by it only for a placeholder outside code, and a lookup (or that text) that raises
``InvalidRequestError`` refuses the whole prompt: ``{Err[99]}`` for a cell without an error
must not be sent as typed, as if it meant nothing.

How code is found: a CommonMark parser (markdown-it-py) decides, never a regex. Every
candidate of our own syntax is found by ``_CANDIDATE``; a marker (a private-use character
absent from the text, then the candidate's number in ASCII digits) is inserted just before
each one, and the marked copy is parsed. The copy holds every character of the prompt, so
brackets in ``{In[3]}`` and the braces stay visible to the parser; the markers are neither
whitespace nor punctuation and sit inside a run of text, so no block or code span can start
or end differently because of them (a candidate has no backtick, tilde, space or newline).
Link reference labels are compared with the markers removed, so a ``[label {x}]`` still
finds its definition. One difference remains, on the safe side: a marker breaks an email
autolink such as ``<me{x}@host>``, so a backtick inside one can open a code span in the
copy, and a placeholder there stays as typed. The candidates whose markers appear in a
``code_inline``, ``code_block`` or ``fence`` token are in code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError

if TYPE_CHECKING:  # markdown-it loads on the first expansion, not at %load_ext
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["Expansion", "expand", "names_used"]

# Our syntax, read left to right. Doubled braces escape a placeholder ("{{name}}" is the text
# "{name}") and nothing else, so the "}}" that ends nested JSON or LaTeX stays as typed.
_CANDIDATE = re.compile(
    r"\{\{(?P<escaped>(?:In|Out|Err)\[-?\d+\]|[^\W\d]\w*)\}\}"
    r"|\{(?:(?P<history>In|Out|Err)\[(?P<index>-?\d+)\]|(?P<name>[^\W\d]\w*))\}"
)
_CODE_TOKENS = frozenset({"code_inline", "code_block", "fence"})
_MISSING = object()
# Unicode's private-use code points: Markdown treats them as plain letters.
_PRIVATE_USE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))


@dataclass(frozen=True)
class Expansion:
    """A prompt after expansion, with the placeholders it expanded and those it withheld.

    ``names`` and ``withheld`` hold placeholders as written (``"{df}"``, ``"{In[3]}"``), in
    the order they first appear, each once.
    """

    text: str
    names: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()
    # Said on the line under the reply by the caller: values described or cut (context.py), --context.
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """What the line under the reply says of it: what was expanded (so the user sees what
        was sent), what was withheld, and the notes."""
        said = [f"expanded: {', '.join(self.names)}"] if self.names else []
        return said + ([withheld_note(self.withheld)] if self.withheld else []) + list(self.notes)


def withheld_note(withheld: Sequence[str], where: str = "") -> str:
    """The one way to say that placeholders were kept as typed; ``where``: " in 1 of 2 items"."""
    return f"not expanded{where}, since the value holds the API token: {', '.join(withheld)}"


def expand(text: str, namespace: Mapping[str, Any], *, token: str | None = None,
           describe: Callable[[str, Any], str] | None = None) -> Expansion:
    """Expand the placeholders of ``text`` that lie outside code. Nothing raises but a refusal
    (below).

    Outside code, ``{name}`` becomes ``str()`` of that variable, ``{In[n]}`` the text of input
    ``In[n]`` and ``{Out[n]}`` the value ``Out[n]`` (negative ``n`` works where Python allows
    it), and ``{{name}}`` becomes the text ``{name}``. Code, as CommonMark defines it (fenced
    blocks with their info string, an unclosed fence running to the end of its container,
    indented blocks, inline code spans), keeps every brace as typed. A placeholder also stays
    as typed when the name is not defined, the entry does not exist or ``str()`` fails, and
    it is withheld (kept as typed, listed in ``withheld``) when its value equals or contains
    ``token``, the API token (``None`` or empty: no check). Any other brace stays as typed,
    and a value is never expanded again.

    ``describe``, when given, writes each value in place of ``str()``: it is called with the
    placeholder as written (``"{df}"``) and the value, and returns the text to put there
    (``context.Describer`` describes a DataFrame and cuts a long value to a budget). What it
    returns is checked for the token like ``str()``'s text; when it raises, the placeholder
    stays as typed, as when ``str()`` fails.

    A refusal: a lookup, ``_placeholder_text_()``, ``str()`` or ``describe`` that raises
    ``InvalidRequestError`` (``{Err[99]}``: cell 99 raised no error) for a placeholder outside
    code makes ``expand`` raise it; inside code the placeholder stays as typed, as always.
    """
    candidates = list(_CANDIDATE.finditer(text))
    values = [_lookup(match, namespace) for match in candidates]
    if all(value is _MISSING for value in values):  # nothing could change: skip the parse
        return Expansion(text)
    in_code = _in_code(text, candidates)
    pieces: list[str] = []
    names: dict[str, None] = {}  # insertion-ordered sets
    withheld: dict[str, None] = {}
    end = 0
    for number, (match, value) in enumerate(zip(candidates, values, strict=True)):
        written = match.group()
        pieces.append(text[end : match.start()])
        end = match.end()
        if value is _MISSING or number in in_code:
            pieces.append(written)
        elif isinstance(value, _Refused):  # {Err[99]} outside code: say why, and send nothing
            raise value.error
        elif match["escaped"] is not None:
            pieces.append(written[1:-1])
        else:
            try:  # a broken __str__ (or a str subclass with a broken `in`) must not fail the cell
                value = _computed(value)
                shown = str(value) if describe is None else describe(written, value)
                leaks = token in shown if token else False
            except InvalidRequestError:  # refused on purpose ({Err} with no error yet)
                raise
            except Exception:
                pieces.append(written)
                continue
            if leaks:
                pieces.append(written)
                withheld.setdefault(written)
            else:
                pieces.append(shown)
                names.setdefault(written)
    pieces.append(text[end:])
    return Expansion("".join(pieces), tuple(names), tuple(withheld))


class _Anything(Mapping[str, Any]):
    """Every name is defined (as ""): what ``expand`` then expands is every placeholder outside code."""

    def __getitem__(self, key: str) -> Any:
        return ""

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


def names_used(text: str) -> tuple[str, ...]:
    """The names of the ``{name}`` placeholders outside code, in order, each once (``{In[n]}``,
    ``{Out[n]}`` and escaped ones are not names)."""
    expanded = expand(text, _Anything()).names
    return tuple(n[1:-1] for n in expanded if not n.startswith(("{In[", "{Out[")))


@dataclass(frozen=True)
class _Refused:
    """A lookup that refused the prompt (``Err[99]``): raised if the placeholder is outside code."""

    error: InvalidRequestError


def _computed(value: Any) -> Any:
    """A value's ``_placeholder_text_()`` when its type has one (``Err``: the latest error,
    worked out only for a placeholder outside code), else the value itself."""
    text = getattr(type(value), "_placeholder_text_", None)
    return text(value) if callable(text) else value


def _lookup(match: re.Match[str], namespace: Mapping[str, Any]) -> Any:
    """The value a candidate stands for, ``_MISSING`` when there is none; escapes are ``""``;
    ``_Refused`` when the lookup raised ``InvalidRequestError`` (a cell without an error)."""
    if match["name"] is not None:
        try:
            return namespace.get(match["name"], _MISSING)
        except Exception:
            return _MISSING
    if match["history"] is None:  # an escaped placeholder, "{{name}}"
        return ""
    # IPython's shapes: In is a list of input strings, Out a dict from prompt number to value.
    try:
        history = namespace.get(match["history"])
        return history[int(match["index"])]  # type: ignore[index]
    except InvalidRequestError as refusal:
        return _Refused(refusal)
    except Exception:
        return _MISSING


# -- which candidates are in code ---------------------------------------------------------------


def _in_code(text: str, candidates: list[re.Match[str]]) -> set[int]:
    """The numbers of the candidates that CommonMark puts inside code."""
    used = set(text)
    mark = next((chr(c) for c in chain(*_PRIVATE_USE) if chr(c) not in used), None)
    if mark is None:  # a text holding all 137,468 private-use characters: expand nothing
        return set(range(len(candidates)))
    marked: list[str] = []
    end = 0
    for number, match in enumerate(candidates):
        marked += (text[end : match.start()], mark, str(number))
        end = match.start()
    marked.append(text[end:])
    markers = re.compile(re.escape(mark) + "([0-9]+)")
    env: dict[str, Any] = {"references": _UnmarkedLabels(markers)}
    found: set[int] = set()
    for token in _walk(_parser().parse("".join(marked), env)):
        if token.type in _CODE_TOKENS:
            # A fence's info string (```{r}) is part of the code block too.
            for code in (token.content, token.info):
                found.update(int(number) for number in markers.findall(code))
    return found


def _walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:  # inline tokens; images keep their alt text here too
            yield from _walk(token.children)


class _UnmarkedLabels(MutableMapping[str, Any]):
    """Link reference definitions, keyed by the label without markers.

    Each marker carries its own number, so ``[x {a}]`` and its definition ``[x {a}]: /url``
    would differ in the marked copy; compared without markers they match as in the prompt.
    """

    def __init__(self, markers: re.Pattern[str]) -> None:
        self._markers = markers
        self._labels: dict[str, Any] = {}

    def _key(self, label: str) -> str:
        return self._markers.sub("", label)

    def __getitem__(self, label: str) -> Any:
        return self._labels[self._key(label)]

    def __setitem__(self, label: str, value: Any) -> None:
        self._labels[self._key(label)] = value

    def __delitem__(self, label: str) -> None:
        del self._labels[self._key(label)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # Plain CommonMark, raw HTML included (it binds tighter than code spans, as in the spec).
    return MarkdownIt("commonmark")
