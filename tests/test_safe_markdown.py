"""safe_markdown: chat Markdown as HTML that is safe to show."""

import re

import pytest

from replicate_magic.safe_markdown import to_html


@pytest.mark.parametrize("markdown, expected", [
    ("Hello **world**, *you* and `a<b`", "<p>Hello <strong>world</strong>, <em>you</em> and <code>a&lt;b</code></p>"),
    ("One line\nnext line\n\nNew paragraph", "<p>One line<br>next line</p><p>New paragraph</p>"),
    ("## Plan", "<h2>Plan</h2>"),
    ("```python\nif a < b:\n    pass\n```\nafter",
     '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre><p>after</p>'),
    ("```\nstill streaming <tag>", "<pre><code>still streaming &lt;tag&gt;</code></pre>"),
    ("- one\n- two\n  - nested\n- three", "<ul><li>one</li><li>two<ul><li>nested</li></ul></li><li>three</li></ul>"),
    ("Steps:\n1. mix\n2. bake", "<p>Steps:</p><ol><li>mix</li><li>bake</li></ol>"),
    ("> quoted *text*", "<blockquote><p>quoted <em>text</em></p></blockquote>"),
    ("| a | b |\n|---|--:|\n| 1 | 2 |",
     "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>"),
    ("[docs](https://replicate.com/docs?a=1&b=2)",
     '<p><a href="https://replicate.com/docs?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">docs</a></p>'),
    ("snake_case stays, 2*3*4 too", "<p>snake_case stays, 2*3*4 too</p>"),
])
def test_markdown_renders_the_usual_reply_shapes(markdown, expected):
    assert to_html(markdown) == expected


@pytest.mark.parametrize("attack", [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JavaScript:alert`1`)",
    "[click](jav&#x61;script:alert(1))",
    '[x](https://a.org" onmouseover="alert(1))',
    "`` <b>in code</b> ``",
    "| <svg onload=alert(1)> |\n|---|\n| <iframe> |",
    "- <style>*{display:none}</style>",
    "```\n</code></pre><script>alert(1)</script>\n```",
])
def test_markdown_never_lets_markup_through(attack):
    rendered = to_html(attack)
    for tag in ("<script", "<img", "<svg", "<iframe", "<style", "<b>", 'onmouseover="'):
        assert tag not in rendered
    assert all(url.startswith("https://") for url in re.findall(r'href="([^"]*)"', rendered))
    assert rendered.count("<pre>") == rendered.count("</pre>")


def test_markdown_survives_absurd_nesting():
    assert to_html(">" * 3000 + " deep <b>").count("<blockquote>") <= 30
    assert "&lt;b&gt;" in to_html(">" * 3000 + " deep <b>")
    assert to_html("".join("  " * n + "- item\n" for n in range(600))).count("<ul>") <= 30
