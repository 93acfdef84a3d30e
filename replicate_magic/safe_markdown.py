"""The Markdown that chat replies use, as HTML that is safe to show. Pure.

Why not let the frontend render ``text/markdown``: JupyterLab renders the outputs of a live
session (and every ``Output`` widget) as trusted, so raw HTML in a reply runs there; a
``<script>`` or an ``onerror=`` a model was talked into writing would act with the
user's kernel (measured in the browser tests' setup, JupyterLab 4.6). Here safety holds by
construction instead of by a sanitiser's rules: every character of the source is
HTML-escaped, the only tags are the fixed ones below, and the only attribute taken from the
text is a link's ``href``, escaped and limited to http(s) and mailto.

The subset: paragraphs (single newlines kept as line breaks, as chat replies mean them),
ATX headings, fenced code (an unclosed fence runs to the end, so code streams as code),
block quotes, nested bullet and numbered lists, GFM tables, rules, and inline code,
links, bold, italic and strikethrough. Anything else shows as the text it is.
"""

from __future__ import annotations

import html
import re
from typing import Callable

__all__ = ["defang", "to_html"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([\w+#.-]*)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}>[ ]?(.*)$")
_ITEM = re.compile(r"^([ \t]*)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|[ \t]*)$")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
_LINK = re.compile(r"\[([^\[\]\n]+)\]\(([^()\s]+)\)")
_SAFE_URL = re.compile(r"^(?:https?://|mailto:)", re.I)
_MAX_DEPTH = 24  # quotes and lists nested deeper show as plain text
_STASHED = re.compile("\x00(\\d+)\x00")
# Each content pattern stops at the next marker of its kind, so a long line full of
# unmatched markers costs linear, not quadratic, time (it re-renders 20 times a second).
_EMPHASIS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\*\*(?=\S)((?:(?!\*\*).)+?)(?<=\S)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<!\w)__(?=\S)((?:(?!__).)+?)(?<=\S)__(?!\w)"), r"<strong>\1</strong>"),
    (re.compile(r"~~(?=\S)((?:(?!~~).)+?)(?<=\S)~~"), r"<del>\1</del>"),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])([^*]+?)(?<=[^\s*])\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"(?<!\w)_(?=\S)([^_]+?)(?<=\S)_(?!\w)"), r"<em>\1</em>"),
]


def to_html(markdown: str) -> str:
    # NUL would collide with the placeholders used while rendering inline text.
    text = markdown.replace("\x00", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")
    return "".join(_blocks(text.split("\n")))


def defang(markdown: str) -> str:
    """Markdown for the frontend's own renderer, with raw HTML and script links disarmed.

    The magic keeps ``text/markdown`` (the frontend renders all of it, math included), but
    a live output is trusted, so HTML in a reply would run. Every ``<`` outside code becomes
    ``&lt;`` (shown as ``<``, never parsed as a tag), and link targets that are not
    http(s), mailto or relative become ``#``. Code spans and fenced code are left alone:
    the renderer escapes them itself.
    """
    out: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            out.append(line)
        elif opening:
            fence = opening.group(1)
            out.append(line)
        else:
            out.append(_defang_line(line))
    return "\n".join(out)


def _defang_line(line: str) -> str:
    pieces = _CODE_SPAN.split(line)  # text, ticks, code, text, ticks, code, ..., text
    for index in range(0, len(pieces), 3):
        text = pieces[index].replace("<", "&lt;")
        pieces[index] = _SCRIPT_LINK.sub(r"\1#", _SCRIPT_REFERENCE.sub(r"\1#", text))
    return "".join(
        piece if index % 3 == 0 else (piece + pieces[index + 1] + piece if index % 3 == 1 else "")
        for index, piece in enumerate(pieces)
    )


_SCRIPT_LINK = re.compile(r"(\]\(\s*)(?!https?:|mailto:|[#/.?])[a-z][a-z0-9+.-]*:[^)\s]*", re.I)
_SCRIPT_REFERENCE = re.compile(r"^(\s{0,3}\[[^\]]+\]:\s*)(?!https?:|mailto:)[a-z][a-z0-9+.-]*:\S*", re.I)


# -- blocks ------------------------------------------------------------------------------------


def _blocks(lines: list[str], depth: int = 0) -> list[str]:
    if depth > _MAX_DEPTH:  # nesting no reader needs; it would only exhaust the stack
        return ["<p>" + html.escape("\n".join(lines)).replace("\n", "<br>") + "</p>"]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif fence := _FENCE.match(line):
            i = _code_block(lines, i, fence, out)
        elif heading := _HEADING.match(line):
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2) or '')}</h{level}>")
            i += 1
        elif _RULE.match(line):
            out.append("<hr>")
            i += 1
        elif _QUOTE.match(line):
            quoted: list[str] = []
            while i < len(lines) and (match := _QUOTE.match(lines[i])):
                quoted.append(match.group(1))
                i += 1
            out.append("<blockquote>" + "".join(_blocks(quoted, depth + 1)) + "</blockquote>")
        elif _ITEM.match(line):
            i = _list(lines, i, out, depth)
        elif "|" in line and i + 1 < len(lines) and _is_table_rule(lines[i + 1]):
            i = _table(lines, i, out)
        else:
            i = _paragraph(lines, i, out)
    return out


def _starts_block(line: str) -> bool:
    return bool(_FENCE.match(line) or _HEADING.match(line) or _RULE.match(line) or _QUOTE.match(line)
                or _ITEM.match(line))


def _paragraph(lines: list[str], i: int, out: list[str]) -> int:
    para = [lines[i].strip()]
    i += 1
    while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
        para.append(lines[i].strip())
        i += 1
    out.append("<p>" + _inline("\n".join(para)).replace("\n", "<br>") + "</p>")
    return i


def _code_block(lines: list[str], i: int, fence: re.Match[str], out: list[str]) -> int:
    marker, language = fence.group(1), fence.group(2)
    closing = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
    body: list[str] = []
    i += 1
    while i < len(lines) and not closing.match(lines[i]):
        body.append(lines[i])
        i += 1
    css = f' class="language-{html.escape(language)}"' if language else ""
    out.append(f"<pre><code{css}>{html.escape(chr(10).join(body))}</code></pre>")
    return i + 1  # past the closing fence (or the end, while the code still streams)


def _list(lines: list[str], i: int, out: list[str], depth: int) -> int:
    first = _ITEM.match(lines[i])
    assert first is not None
    indent, ordered = len(first.group(1).expandtabs(4)), first.group(2)[0].isdigit()
    items: list[str] = []
    while i < len(lines):
        item = _ITEM.match(lines[i])
        if item is None or len(item.group(1).expandtabs(4)) != indent or item.group(2)[0].isdigit() != ordered:
            break
        body = [item.group(3) or ""]
        i += 1
        while i < len(lines):  # the item's own lines: indented deeper, or a lazy continuation
            line = lines[i]
            deeper = len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip()) > indent
            if line.strip() and (deeper or not _starts_block(line)):
                body.append(line.expandtabs(4) if deeper else line.strip())
                i += 1
            elif not line.strip() and _next_is_deeper(lines, i, indent):
                body.append("")
                i += 1
            else:
                break
        items.append("<li>" + _tight("".join(_blocks(_dedent(body), depth + 1))) + "</li>")
        if i < len(lines) and not lines[i].strip() and _next_item(lines, i, indent, ordered):
            i = _skip_blank(lines, i)
    tag = "ol" if ordered else "ul"
    start = int(first.group(2)[:-1]) if ordered else 1
    out.append(f"<{tag}{f' start={start}' if start != 1 else ''}>{''.join(items)}</{tag}>")
    return i


def _table(lines: list[str], i: int, out: list[str]) -> int:
    head = _cells(lines[i])
    i += 2
    rows: list[list[str]] = []
    while i < len(lines) and "|" in lines[i] and lines[i].strip():
        rows.append(_cells(lines[i]))
        i += 1
    header = "".join(f"<th>{_inline(cell)}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    out.append(f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
    return i


def _is_table_rule(line: str) -> bool:
    """``|---|:--:|``: the line under a table's header."""
    return "-" in line and "|" in line and set(line.strip()) <= set("|:- \t")


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _tight(inner: str) -> str:
    """A one-paragraph list item shows without the paragraph's margins."""
    if inner.startswith("<p>") and inner.count("<p>") == 1:
        return inner[3:].replace("</p>", "", 1)
    return inner


def _dedent(body: list[str]) -> list[str]:
    rest = [line for line in body[1:] if line.strip()]
    margin = min((len(line) - len(line.lstrip()) for line in rest), default=0)
    return body[:1] + [line[margin:] for line in body[1:]]


def _next_is_deeper(lines: list[str], i: int, indent: int) -> bool:
    j = _skip_blank(lines, i)
    return j < len(lines) and len(lines[j].expandtabs(4)) - len(lines[j].expandtabs(4).lstrip()) > indent


def _next_item(lines: list[str], i: int, indent: int, ordered: bool) -> bool:
    j = _skip_blank(lines, i)
    item = _ITEM.match(lines[j]) if j < len(lines) else None
    return bool(item and len(item.group(1).expandtabs(4)) == indent and item.group(2)[0].isdigit() == ordered)


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


# -- inline ------------------------------------------------------------------------------------


def _inline(text: str) -> str:
    """Escape everything, then add our tags: code spans and links are set aside first, so
    emphasis markers inside them stay as typed."""
    stash: list[str] = []

    def keep(fragment: str) -> str:
        stash.append(fragment)
        return f"\x00{len(stash) - 1}\x00"

    def code(match: re.Match[str]) -> str:
        return keep(f"<code>{html.escape(match.group(2).strip() or match.group(2))}</code>")

    text = _CODE_SPAN.sub(code, text)
    text = html.escape(text)  # placeholders (NUL and digits) pass through unchanged

    def link(match: re.Match[str]) -> str:
        label, url = _emphasis(match.group(1)), match.group(2)
        if not _SAFE_URL.match(html.unescape(url)):
            return keep(label)  # javascript: and friends become plain text
        return keep(f'<a href="{url}" target="_blank" rel="noopener noreferrer">{label}</a>')

    text = _emphasis(_LINK.sub(link, text))
    return _restore(text, stash.__getitem__)


def _emphasis(text: str) -> str:
    for pattern, replacement in _EMPHASIS:
        text = pattern.sub(replacement, text)
    return text


def _restore(text: str, fragment: Callable[[int], str]) -> str:
    # A stashed link label may itself hold stashed code spans: restore until none are left.
    while _STASHED.search(text):
        text = _STASHED.sub(lambda m: fragment(int(m.group(1))), text)
    return text
