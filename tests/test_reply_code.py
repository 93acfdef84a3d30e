"""The code of a reply for ``-f code`` (reply_code, pure): the first fenced block as CommonMark
reads it, else the whole reply."""

from __future__ import annotations

import pytest

from replicate_magic.reply_code import code_of, first_fenced_block


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("Here:\n\n```python\nprint(1)\n```\n\nDone.", "print(1)"),
        ("```\nx = 1\n\ny = 2\n```", "x = 1\n\ny = 2"),  # a blank line inside stays
        ("~~~py\nprint('```')\n~~~", "print('```')"),  # backticks inside a tilde fence
        ("````md\n```python\ninner\n```\n````", "```python\ninner\n```"),  # a longer fence holds a shorter one
        ("1. Step one:\n\n   ```python\n   def f():\n       return 1\n   ```\n", "def f():\n    return 1"),
        ("> ```sh\n> ls -l\n> ```", "ls -l"),  # in a quote: the quote marks are not code
        ("First:\n```a\none\n```\nthen\n```b\ntwo\n```", "one"),  # the first of several
        ("Cut short:\n```python\nfor i in range(3):\n    print(i)", "for i in range(3):\n    print(i)"),  # unclosed
        ("```python\n```", ""),  # empty
        ("    indented = 'not fenced'\n\n```\nfenced\n```", "fenced"),  # an indented block is not taken
        ("Use `inline()` here.\n\n```\nblock()\n```", "block()"),
        ("<div>\n```python\nseen()\n```\n</div>", "seen()"),  # raw HTML is text, as the renderer shows it
    ],
)
def test_the_first_fenced_block_exactly(reply: str, code: str) -> None:
    assert first_fenced_block(reply) == code
    assert code_of(reply) == code


@pytest.mark.parametrize(
    "reply",
    ["Just prose.", "Inline `code()` only.", "    indented only\n", "\\```\nnot a fence\n\\```", "``not`` a ```fence```"],
)
def test_no_fenced_block_means_the_whole_reply(reply: str) -> None:
    assert first_fenced_block(reply) is None
    assert code_of(f"\n\n{reply}  \n\n") == reply.rstrip()
