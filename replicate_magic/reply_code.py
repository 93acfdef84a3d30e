"""The code a reply carries, for ``-f code``. Pure: no I/O, no IPython.

The code is the reply's first fenced code block (```` ``` ```` or ``~~~``, also in a list item
or a quote, an unclosed one running to the end of its container), its content exactly as
CommonMark defines it: the container's indentation removed, the info string left out. What
is a fence is decided by a CommonMark parser (markdown-it-py, as ``render.py`` uses), never by
a pattern: a fence inside another block, an indented block or a code span is not one, and
raw HTML is text, as the renderer shows it. A reply without a fenced block is taken whole.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # markdown-it loads on first use, not at %load_ext
    from markdown_it import MarkdownIt

__all__ = ["code_of", "first_fenced_block"]


def first_fenced_block(text: str) -> str | None:
    """The content of the first fenced code block of ``text`` without its last line end, or None."""
    # Block tokens come as one flat list (list items and quotes open and close around theirs).
    fence = next((t for t in _parser().parse(text) if t.type == "fence"), None)
    if fence is None:
        return None
    content = fence.content
    return content[:-1] if content.endswith("\n") else content


def code_of(reply: str) -> str:
    """What ``-f code`` puts into a new cell: the first fenced block, else the whole reply
    (without the blank lines and trailing spaces around it)."""
    block = first_fenced_block(reply)
    return block if block is not None else reply.strip("\n").rstrip()


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # As render.py reads a reply (raw HTML is text there): the block the user sees is the one taken.
    return MarkdownIt("commonmark", {"html": False})
