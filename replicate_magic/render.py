"""Untrusted text as HTML that is inert by construction: the one renderer. Pure.

Model replies, prompts, boot logs, server errors and loaded names are hostile, and the
outputs of a live session are trusted by JupyterLab and Notebook 7, so HTML that reaches
the page runs with the kernel's privileges. Here no rule decides what is dangerous: a
CommonMark parser (markdown-it-py) with raw HTML off turns every character of the source
into text, and the only markup is what the parser's own renderer emits for Markdown
constructs, plus these changes of ours:

- links only to ``http:``, ``https:`` and ``mailto:`` (checked after the parser decoded
  entities and normalised the URL); any other link stays as its source text;
- images are never fetched (a prompt-injected model could send the conversation away in
  an image URL): they show as links;
- fenced and indented code highlighted by Pygments, styled with JupyterLab's editor
  colours, so the highlighting follows the theme;
- ``$...$`` and ``$$...$$`` math kept for the frontend's MathJax; everything else is
  marked ``mathjax_ignore``, so a dollar in prose or a ``\\begin`` in text is not typeset.

Output files (images, audio, video a model made) are shown by ``files_html``: the bytes go
in as base64 ``data:`` URIs of the type sniffed from them (``outputs.py``), never a URL to
fetch, and every name, size or reason around them is escaped text.

``markdown_html`` renders a whole text, ``plain_html`` a line that is not Markdown (a
status, a log line, a metrics line) and ``inline_html`` such text inside an element of the
caller's, and ``StreamingMarkdown`` a reply that grows, re-rendering only the blocks that can
still change.
``columns_html`` sets several replies (already rendered here) side by side, each under its
escaped label.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .outputs import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES, FileFacts

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["COLUMNS_CSS", "FILES_CSS", "SAFE_SCHEMES", "Column", "ShownFile", "StreamingMarkdown", "columns_html",
           "files_html", "inline_html", "markdown_html", "plain_html"]

SAFE_SCHEMES = ("http:", "https:", "mailto:")
_LANGUAGE = re.compile(r"[\w+#.-]+")  # a fence's language, when it names one (a CSS class)
_ROOT_OPEN = '<div class="rm-md mathjax_ignore">'
_ROOT_CLOSE = "</div>"
_LIVE = "rm_live_block"  # env key: index of the token still being written, if it is code
# A code block above this size is shown unhighlighted: Pygments costs ~1 ms per KB.
_HIGHLIGHT_LIMIT = 200_000
_INDENTED_LANGUAGE = "python"  # indented code names no language: the notebook's
_MAX_LEVEL = 18  # token levels this deep are near markdown-it's nesting limit (20)


def markdown_html(text: str, *, live: bool = False) -> str:
    """The whole text as an HTML fragment (a ``div``), safe to show in a trusted output.

    ``live``: the text is still growing, so a code block at its end is not highlighted yet.
    """
    parser = _parser()
    env: dict[str, Any] = {}
    text = _normalise(text)
    tokens = parser.parse(text, env)
    if _too_deep(tokens):
        return _ROOT_OPEN + plain_html(text, css="rm-plain", style="span") + _ROOT_CLOSE
    if live:
        env[_LIVE] = _open_code_block(tokens)
    return _wrap(parser.renderer.render(tokens, parser.options, env))


def plain_html(text: str, css: str = "rm-note", style: str = "em") -> str:
    """Text that is not Markdown (a status, a log line): escaped, in one ``p``.

    ``css`` and ``style`` (the element around the text: ``em``, ``sub``...) are ours, never
    taken from the text.
    """
    return f'<p class="{css} mathjax_ignore"><{style}>{inline_html(text)}</{style}></p>'


def table_html(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table of plain values (a log listing): every cell escaped text, never Markdown."""
    head = "".join(f"<th>{inline_html(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{inline_html('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"{_ROOT_OPEN}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{_ROOT_CLOSE}"


def inline_html(text: str) -> str:
    """Text that is not Markdown, escaped for use inside an element of ours."""
    return html.escape(_normalise(text)).replace("\n", "<br>")


class ShownFile(Protocol):
    """What ``files_html`` needs of an output file (``files.FileOutput`` is one)."""

    url: str
    name: str
    path: Path | None
    problem: str | None

    @property
    def facts(self) -> FileFacts: ...

    @property
    def in_memory(self) -> bool: ...

    def read(self) -> bytes: ...

    def summary(self) -> str: ...

    def listing(self) -> str: ...


FILES_CSS = (".rm-files { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }\n"
             ".rm-file { margin: 0; max-width: 100%; }\n"
             ".rm-file img, .rm-file video { max-width: min(100%, 512px); height: auto; display: block; }\n"
             ".rm-file figcaption { font-size: 85%; opacity: 0.8; }")


def files_html(files: Sequence[ShownFile], embed: bool = True) -> str:
    """Output files in order, as a grid: images, players, or a line each (name, size, type,
    and where it is: a link to an https URL, the path it was saved to). ``embed`` False
    shows lines only (a file that is too big, a frontend that is told not to)."""
    items = "".join(_file_html(item, embed) for item in files)
    return f'<div class="rm-files mathjax_ignore"><style>{FILES_CSS}</style>{items}</div>'


def _file_html(item: ShownFile, embed: bool) -> str:
    found = item.facts
    caption = inline_html(item.listing())
    if embed and item.problem is None and found.embeddable and item.in_memory:
        source = f"data:{found.content_type};base64,{base64.b64encode(item.read()).decode('ascii')}"
        alt = html.escape(item.name)
        if found.content_type in IMAGE_TYPES:
            body = f'<img src="{source}" alt="{alt}">'
        elif found.content_type in AUDIO_TYPES:
            body = f'<audio controls src="{source}"></audio>'
        elif found.content_type in VIDEO_TYPES:
            body = f'<video controls src="{source}"></video>'
        else:
            body = ""
        return f'<figure class="rm-file">{body}<figcaption>{caption}</figcaption></figure>'
    if found.content_type in IMAGE_TYPES and found.pixels and item.problem is None and not found.embeddable:
        width, height = found.pixels
        caption += inline_html(f" · {width} x {height} pixels: too large to show")
    link = ""
    if _is_safe_link(item.url) and item.url.lower().startswith("https:"):
        link = (f' <a href="{html.escape(item.url)}" target="_blank" rel="noopener noreferrer nofollow">'
                "open</a>")
    return f'<figure class="rm-file"><figcaption>{caption}{link}</figcaption></figure>'


COLUMNS_CSS = (".rm-columns { display: flex; flex-wrap: nowrap; gap: 12px; align-items: stretch; "
               "overflow-x: auto; }\n"
               ".rm-column { flex: 1 1 0; min-width: 220px; padding: 0 10px; "
               "border-left: 3px solid var(--jp-border-color2, #ddd); }\n"
               ".rm-column-head { font-weight: 600; margin: 2px 0 6px; overflow-wrap: anywhere; }\n"
               ".rm-column .rm-error { color: var(--jp-error-color1, #c62828); }")


@dataclass(frozen=True)
class Column:
    """One reply among several shown side by side (``columns_html``)."""

    label: str  # a model's name: text, escaped here
    body_html: str  # the reply, rendered by this module (markdown_html, StreamingMarkdown, plain_html...)
    note: str = ""  # the line under it (metrics, a status, an error): text, escaped here
    failed: bool = False  # the note is an error


def columns_html(columns: Sequence[Column], note: str = "") -> str:
    """Replies in a row of columns, each under its label with its own line, and ``note`` (text)
    under them all. A row wider than the output scrolls instead of stacking the columns."""
    cells = "".join(_column_html(column) for column in columns)
    under = plain_html(note) if note else ""
    return f'<div class="rm-columns mathjax_ignore"><style>{COLUMNS_CSS}</style>{cells}</div>{under}'


def _column_html(column: Column) -> str:
    head = f'<div class="rm-column-head">{inline_html(column.label)}</div>'
    if not column.note:
        foot = ""
    elif column.failed:
        foot = plain_html(column.note, css="rm-error", style="span")
    else:
        foot = plain_html(column.note, css="rm-metrics", style="sub")
    return f'<div class="rm-column">{head}{column.body_html}{foot}</div>'


class StreamingMarkdown:
    """Renders a text that grows at its end; what the end can no longer change is kept.

    A top-level block followed by another one whose first two lines are complete is final:
    appending text only changes the last line, and the kind of a complete line (list item,
    heading, fence...) depends on at most the line after it (a table's delimiter row). Link
    reference definitions are the exception (a later ``[x]: url`` changes an earlier
    ``[x]``), so a text that has one is rendered whole. The code block still being written is
    not highlighted until the next block starts. Any text that does not extend the previous
    one starts afresh. Each result equals ``markdown_html(text, live=True)``; only the cost differs.
    """

    def __init__(self) -> None:
        self._source = ""  # the settled prefix of the text (whole lines)
        self._html = ""  # its rendering

    def render(self, text: str) -> str:
        text = _normalise(text)
        if not text.startswith(self._source):
            self._source, self._html = "", ""
        tail = text[len(self._source):]
        env: dict[str, Any] = {}
        parser = _parser()
        tokens = parser.parse(tail, env)
        if env.get("references") or _too_deep(tokens):
            self._source, self._html = "", ""
            return markdown_html(text, live=True)
        settle = _last_settled_block(tokens, tail)
        if settle is not None:
            index, offset = settle
            self._html += parser.renderer.render(tokens[:index], parser.options, env)
            self._source += tail[:offset]
            tokens = tokens[index:]
        env[_LIVE] = _open_code_block(tokens)
        return _wrap(self._html + parser.renderer.render(tokens, parser.options, env))


def _wrap(inner: str) -> str:
    css = f"<style>{_code_css()}</style>" if "<pre" in inner else ""
    return _ROOT_OPEN + css + inner + _ROOT_CLOSE


def _too_deep(tokens: Sequence[Token]) -> bool:
    # At its nesting limit markdown-it drops the rest of a container's text; nesting no
    # reader needs shows as plain text instead, so nothing is hidden.
    return any(token.level >= _MAX_LEVEL for token in tokens)


def _normalise(text: str) -> str:
    # The line ends markdown-it reads, made explicit so offsets into the text match its lines.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


def _last_settled_block(tokens: Sequence[Token], tail: str) -> tuple[int, int] | None:
    """(token index, character offset) where the last top-level block starts, if what
    comes before it is final; None when there is nothing to settle."""
    starts = [i for i, token in enumerate(tokens) if token.level == 0 and token.nesting >= 0 and token.map]
    # A paragraph opening with "$$" may yet become a math block when its closing "$$"
    # arrives: nothing from the block that holds it on is final.
    opener = next((i for i, token in enumerate(tokens)
                   if token.type == "inline" and token.content.startswith("$$")), len(tokens))
    starts = [i for i in starts if i <= opener]
    if len(starts) < 2:
        return None
    index = starts[-1]
    first_line = tokens[index].map[0]  # type: ignore[index]
    line_starts = [0]
    position = -1
    # The block's first two lines must be complete: a table that interrupts a paragraph
    # is a table only once its delimiter row (the second line) is.
    for _ in range(first_line + 2):
        position = tail.find("\n", position + 1)
        if position < 0:
            return None
        line_starts.append(position + 1)
    return index, line_starts[first_line]


def _open_code_block(tokens: Sequence[Token]) -> int:
    """The index of the last code block when nothing but closing tokens follow it, else -1."""
    for index in range(len(tokens) - 1, -1, -1):
        token = tokens[index]
        if token.nesting == -1:
            continue
        return index if token.type in ("fence", "code_block") else -1
    return -1


# -- the parser, built once and only when first needed (%load_ext stays light) ----------------


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    # breaks: chat replies mean a single newline as a line break (poems, addresses).
    parser = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False, "typographer": False})
    parser.enable(["table", "strikethrough"])
    # Pandoc's rule: no space inside the dollars and no digit after the closing one, so
    # "$5 and $6" stays prose. No labels: they would put text into an id attribute.
    parser.use(dollarmath_plugin, allow_space=False, allow_digits=False, double_inline=True, allow_labels=False)
    parser.validateLink = _is_safe_link  # type: ignore[method-assign]
    rules = {
        "link_open": _link_open,
        "image": _image,
        "fence": _fence,
        "code_block": _code_block,
        "math_inline": _math("span", "$", "$"),
        "math_inline_double": _math("span", "$$", "$$", display=True),
        "math_block": _math("div", "$$", "$$"),
    }
    for name, rule in rules.items():
        parser.add_render_rule(name, rule)
    return parser


def _is_safe_link(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


def _link_open(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    token.attrSet("target", "_blank")
    token.attrSet("rel", "noopener noreferrer nofollow")
    return str(renderer.renderToken(tokens, idx, options, env))


def _image(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    label = html.escape(f"image: {alt}" if alt else f"image: {src}")
    return (f'<a class="rm-image-link" href="{html.escape(src)}" target="_blank" '
            f'rel="noopener noreferrer nofollow">[{label}]</a>')


def _math(tag: str, opening: str, closing: str, *, display: bool = False) -> Any:
    # The delimiters stay in the text, for the frontend's MathJax to find; the class lifts
    # the root's mathjax_ignore for this element only.
    kind = "display" if display or tag == "div" else "inline"

    def rule(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        content = html.escape(tokens[idx].content.strip(), quote=False)
        return f'<{tag} class="math {kind} mathjax_process">{opening}{content}{closing}</{tag}>'

    return rule


def _fence(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    language = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    live = env.get(_LIVE) == idx
    return _code_html(token.content, language, highlight=not live)


def _code_block(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    live = env.get(_LIVE) == idx
    return _code_html(tokens[idx].content, "", highlight=not live)


def _code_html(code: str, language: str, *, highlight: bool) -> str:
    # Pygments guesses a language badly (Python as "Scdoc"): indented code is taken as Python.
    lexer_name = language or _INDENTED_LANGUAGE
    body = _highlighted(code, lexer_name) if highlight and len(code) <= _HIGHLIGHT_LIMIT else None
    css = f' class="language-{language}"' if _LANGUAGE.fullmatch(language) else ""
    if body is None:
        return f"<pre><code{css}>{html.escape(code, quote=False)}</code></pre>\n"
    return f'<pre class="rm-code"><code{css}>{body}</code></pre>\n'


@lru_cache(maxsize=512)  # settled blocks re-render with every frame: highlight each once
def _highlighted(code: str, language: str) -> str | None:
    """Pygments' HTML for the code (escaped text in spans of its classes), or None."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.lexers.special import TextLexer
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        return None
    if isinstance(lexer, TextLexer):
        return None
    return str(highlight(code, lexer, HtmlFormatter(nowrap=True))).removesuffix("\n") + (
        "\n" if code.endswith("\n") else "")


# Pygments' token classes mapped to the editor colours of the JupyterLab theme in use.
_COLOURS = (
    ("Comment", "comment", "font-style: italic"),
    ("Keyword", "keyword", "font-weight: bold"),
    ("Operator.Word", "keyword", "font-weight: bold"),
    ("Operator", "operator", ""),
    ("Name.Builtin", "builtin", ""),
    ("Name.Function", "def", ""),
    ("Name.Class", "def", ""),
    ("Name.Decorator", "meta", ""),
    ("Name.Tag", "tag", ""),
    ("Name.Attribute", "attribute", ""),
    ("Name.Variable", "variable-2", ""),
    ("Literal.String", "string", ""),
    ("Literal.Number", "number", ""),
    ("Punctuation", "punctuation", ""),
    ("Generic.Heading", "header", "font-weight: bold"),
    ("Generic.Deleted", "error", ""),
    ("Generic.Inserted", "string", ""),
    ("Error", "error", ""),
)


@lru_cache(maxsize=1)
def _code_css() -> str:
    from pygments.token import STANDARD_TYPES, string_to_tokentype

    groups = [(string_to_tokentype(name), (colour, extra)) for name, colour, extra in _COLOURS]
    classes: dict[tuple[str, str], list[str]] = {}
    for token_type, css_class in sorted(STANDARD_TYPES.items(), key=lambda item: item[1]):
        # The most specific group that holds this token type gives its colour.
        matches = [group for group in groups if css_class and token_type in group[0]]
        if matches:
            classes.setdefault(max(matches, key=lambda group: len(group[0]))[1], []).append("." + css_class)
    # A background, as in the editor, so two code blocks in a row read as two.
    rules = [(".rm-md pre { background: var(--jp-cell-editor-background, #f7f7f7); padding: 6px 10px; "
              "border-radius: 4px; }")]
    for (colour, extra), selectors in classes.items():
        style = f"color: var(--jp-mirror-editor-{colour}-color)" + (f"; {extra}" if extra else "")
        rules.append(f".rm-md pre.rm-code :is({', '.join(selectors)}) {{ {style} }}")
    return "\n".join(rules)
