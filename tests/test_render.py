"""render: untrusted text as inert HTML, by a CommonMark parser with raw HTML off."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicate_magic.render import StreamingMarkdown, markdown_html, plain_html

from .html_allowlist import violations

# Each of these ran script in JupyterLab 4.6 through the hand-written renderer, or would have.
ATTACKS = [
    "\\`<img src=x onerror=window.pwned=1>\\`",  # escaped backticks: not code
    "```a`b\n<img src=x onerror=window.pwned=1>\n```",  # an info string with a backtick: no fence
    "```\ncode\n``` not-a-close\n<img src=x onerror=window.pwned=1>",  # a "closing" fence with info
    "- item\n\n  ```\n  x\n  ```\n<img src=x onerror=window.pwned=1>",  # a fence in a list item
    "[x](&#106;avascript:window.pwned=1)",
    "[x](javascript:window.pwned=1)",
    "[x](JaVaScRiPt:window.pwned=1)",
    "[x](jav&#x61;script:window.pwned=1)",
    "[x](vbscript:msgbox)",
    "[x](data:text/html;base64,PHNjcmlwdD53aW5kb3cucHduZWQ9MTwvc2NyaXB0Pg==)",
    "<javascript:window.pwned=1>",
    "[ref]\n\n[ref]: javascript:window.pwned=1",
    '[x](https://a.org" onmouseover="window.pwned=1)',
    "![](https://elsewhere.example/p.png?d=secret)",
    "![a](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "<script>window.pwned=1</script>",
    "<svg onload=window.pwned=1>",
    "<iframe src=javascript:window.pwned=1></iframe>",
    "<a href=javascript:window.pwned=1>x</a>",
    "<details open ontoggle=window.pwned=1>",
    "<style>*{display:none}</style>",
    "| a | <img src=x onerror=window.pwned=1> |\n|---|---|\n| <svg onload=1> | 2 |",
    "> quote <img src=x onerror=window.pwned=1>\n> more",
    "```\nunclosed fence <img src=x onerror=window.pwned=1>",
    "`` <b>in code</b> ``",
    "<!-- comment --><?pi?><!DOCTYPE html>",
    "$x$ <img src=x onerror=window.pwned=1> $$y$$",
    "```html\n</code></pre><script>window.pwned=1</script>\n```",
    "    indented </code></pre><img src=x onerror=1>",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_attack_yields_markup_outside_the_allow_list(attack: str) -> None:
    for rendered in (markdown_html(attack), markdown_html(attack, live=True), StreamingMarkdown().render(attack)):
        assert violations(rendered) == []


@pytest.mark.parametrize("attack", ATTACKS)
def test_plain_html_is_only_text(attack: str) -> None:
    rendered = plain_html(attack)
    assert violations(rendered) == []
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)) == attack.replace("\n", "")


def test_hostile_html_shows_as_the_text_it_is() -> None:
    rendered = markdown_html('<img src=x onerror="window.pwned=1"> and <script>x</script>')
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in rendered
    assert "&lt;script&gt;x&lt;/script&gt;" in rendered


def test_unsafe_links_stay_as_their_source_text() -> None:
    rendered = markdown_html("[x](javascript:alert(1)) and [y](&#106;avascript:alert(1))")
    assert "<a" not in rendered
    assert "[x](javascript:alert(1))" in rendered  # no stray ")" left behind
    assert "[y](javascript:alert(1))" in rendered


def test_safe_links_open_in_a_new_tab_without_an_opener() -> None:
    rendered = markdown_html("[docs](https://replicate.com/docs?a=1&b=2) <mailto:me@example.org>")
    assert '<a href="https://replicate.com/docs?a=1&amp;b=2" target="_blank" rel="noopener noreferrer nofollow">docs</a>' in rendered
    assert 'href="mailto:me@example.org"' in rendered


def test_images_are_links_and_never_fetched() -> None:
    rendered = markdown_html("![a chart](https://elsewhere.example/p.png?d=1)")
    assert "<img" not in rendered
    assert '<a class="rm-image-link" href="https://elsewhere.example/p.png?d=1"' in rendered
    assert "[image: a chart]" in rendered


@pytest.mark.parametrize(
    ("markdown", "fragment"),
    [
        ("Hello **world**, *you* and `a<b`", "<p>Hello <strong>world</strong>, <em>you</em> and <code>a&lt;b</code></p>"),
        ("One line\nnext line\n\nNew paragraph", "<p>One line<br />\nnext line</p>\n<p>New paragraph</p>"),
        ("## Plan", "<h2>Plan</h2>"),
        ("- one\n- two\n  - nested", "<ul>\n<li>one</li>\n<li>two\n<ul>\n<li>nested</li>\n</ul>\n</li>\n</ul>"),
        ("Steps:\n\n3. mix\n4. bake", '<ol start="3">\n<li>mix</li>\n<li>bake</li>\n</ol>'),
        ("> quoted *text*", "<blockquote>\n<p>quoted <em>text</em></p>\n</blockquote>"),
        ("| a | b |\n|---|--:|\n| 1 | 2 |", '<th style="text-align:right">b</th>'),
        ("~~gone~~", "<s>gone</s>"),
        ("snake_case_name stays", "<p>snake_case_name stays</p>"),
        ("Costs $5 and $6 today", "<p>Costs $5 and $6 today</p>"),
        ("Euler: $e^{i\\pi} + 1 = 0$", '<span class="math inline mathjax_process">$e^{i\\pi} + 1 = 0$</span>'),
        ("$$\n\\int_0^1 x < 2\n$$", '<div class="math display mathjax_process">$$\\int_0^1 x &lt; 2$$</div>'),
    ],
)
def test_the_usual_reply_shapes(markdown: str, fragment: str) -> None:
    rendered = markdown_html(markdown)
    assert fragment in rendered
    assert rendered.startswith('<div class="rm-md mathjax_ignore">')  # prose is never typeset
    assert violations(rendered) == []


def test_fenced_code_is_highlighted_and_keeps_its_text() -> None:
    rendered = markdown_html("```python\nif a < b:\n    print('<x>')\n```")
    assert '<pre class="rm-code"><code class="language-python">' in rendered
    assert '<span class="k">if</span>' in rendered
    assert "<style>" in rendered  # the colours of the editor's theme
    text = html.unescape(re.sub(r"<style>.*?</style>|<[^>]+>", "", rendered, flags=re.DOTALL))
    assert text.rstrip() == "if a < b:\n    print('<x>')"  # "<" shows as "<", never "&lt;"
    assert violations(rendered) == []


def test_indented_code_under_a_numbered_step_is_code_and_highlighted_as_python() -> None:
    rendered = markdown_html("1. Define it:\n\n        def double(x):\n            return x * 2\n\n2. Call it.")
    assert '<pre class="rm-code"><code>' in rendered
    assert '<span class="k">def</span>' in rendered
    assert "<li>\n<p>Call it.</p>" in rendered


def test_an_unknown_language_is_plain_code() -> None:
    rendered = markdown_html("```no-such-language\n<b>x</b>\n```")
    assert '<pre><code class="language-no-such-language">&lt;b&gt;x&lt;/b&gt;\n</code></pre>' in rendered
    assert '<span class="' not in rendered
    assert "<style>" not in markdown_html("no code here")


def test_absurd_nesting_shows_as_plain_text_and_hides_nothing() -> None:
    deep = markdown_html(">" * 3000 + " deep <b>")
    assert "&gt;" * 3000 + " deep &lt;b&gt;" in deep and violations(deep) == []
    assert StreamingMarkdown().render(">" * 3000 + " deep <b>") == markdown_html(">" * 3000 + " deep <b>", live=True)
    listed = markdown_html("".join("  " * n + "- item\n" for n in range(600)))
    assert violations(listed) == []


# -- streaming ------------------------------------------------------------------------------------


def test_a_live_code_block_is_highlighted_once_the_next_block_starts() -> None:
    stream = StreamingMarkdown()
    open_fence = stream.render("Intro\n\n```python\nx = 1\n")
    assert 'class="k"' not in open_fence and "<pre><code" in open_fence
    closed = stream.render("Intro\n\n```python\nx = 1\n```\n\nAfter it.\n\nMore")
    assert '<pre class="rm-code">' in closed


def test_streaming_keeps_what_cannot_change_and_renders_the_rest() -> None:
    stream = StreamingMarkdown()
    text = "# Title\n\nFirst paragraph.\n\n- a list\n- of items\n\nLast"
    for end in range(1, len(text) + 1):
        assert stream.render(text[:end]) == markdown_html(text[:end], live=True)
    assert stream._source.startswith("# Title\n\nFirst paragraph.\n\n")  # settled, not re-rendered


def test_streaming_restarts_when_the_text_is_replaced() -> None:
    stream = StreamingMarkdown()
    stream.render("A\n\nB\n\nC\n\nD")
    assert stream.render("Other\n\ntext") == markdown_html("Other\n\ntext", live=True)


PIECES = st.sampled_from([
    "# h\n", "para ", "text\n", "\n", "\n\n", "- a\n", "  - b\n", "1. x\n", "2) y\n", "+ z\n",
    "```py\n", "x = 1\n", "```\n", "~~~\n", "> q\n", ">", "    code\n", "\t", " ", "| a | b |\n",
    "|---|---|\n", "| 1 | 2 |\n", "|", "---\n", "===\n", "$$\n", "a^2\n", "$x$ ", "*em* ", "`c` ",
    "[x]: https://a\n", "[x]\n", "-", "1", "<b>", "<img src=x onerror=1>", "[l](javascript:x)",
    "![i](https://e.x/p.png)", "&#106;", "\r\n", "\r",
])


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(PIECES, max_size=30), cuts=st.lists(st.integers(1, 15), max_size=40))
def test_streamed_frames_equal_whole_renders(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    stream = StreamingMarkdown()
    end = 0
    for cut in [*cuts, len(text)]:
        end = min(len(text), end + cut)
        assert stream.render(text[:end]) == markdown_html(text[:end], live=True)


HTML_FRAGMENTS = st.sampled_from([
    "<script>", "</script>", "<img src=x onerror=1>", "<svg onload=1>", "<iframe>", "<a href=javascript:1>",
    "<style>", "<b>", "</code></pre>", '" onmouseover="', "javascript:", "&#106;avascript:", "<!--",
    "<math><mi xlink:href=javascript:1>", "<object data=x>", "<base href=//e.x>", "<meta http-equiv=refresh>",
])
MARKDOWN_BITS = st.sampled_from(["`", "```", "~~~", "\n", "\n\n", "    ", "> ", "- ", "1. ", "[", "](", ")",
                                 "![", "|", "|---|\n", "*", "_", "$", "$$", "\\", "<", ">", "http://x", "a"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(HTML_FRAGMENTS, MARKDOWN_BITS, st.text(max_size=5)), max_size=40))
def test_random_markdown_with_html_never_yields_a_disallowed_element(parts: list[str]) -> None:
    text = "".join(parts)
    assert violations(markdown_html(text)) == []
    assert violations(markdown_html(text, live=True)) == []
    assert violations(plain_html(text)) == []
