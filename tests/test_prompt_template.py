"""{name} expansion in prompts: outside code only, only what the namespace can fill, never the token."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from replicate_magic.errors import InvalidRequestError
from replicate_magic.prompt_template import Expansion, expand

TOKEN = "r8_FAKEfakeFAKEfake0123456789"  # not a real token

NAMESPACE: dict[str, Any] = {
    "name": "Ada",
    "n": 3,
    "i": 7,
    "items": [1, 2],
    "nothing": None,
    "café": "crème",
    "key": TOKEN,
    "header": f"Authorization: Bearer {TOKEN}",
    "In": ["", "x = 1", "print(x)", "df.describe()"],
    "Out": {3: "a table", 7: 42},
}


def text(prompt: str, namespace: dict[str, Any] = NAMESPACE) -> str:
    return expand(prompt, namespace, token=TOKEN).text


# -- placeholders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Hello {name}!", "Hello Ada!"),
        ("{name}{name}", "AdaAda"),
        ("{n} items: {items}", "3 items: [1, 2]"),
        ("{nothing}", "None"),
        ("{café}", "crème"),
        ("Explain {In[1]}", "Explain x = 1"),
        ("{In[0]}", ""),
        ("{In[-1]}", "df.describe()"),
        ("{In[-4]}", ""),
        ("{Out[3]} and {Out[7]}", "a table and 42"),
        ("multi\nline {name}\n", "multi\nline Ada\n"),
        ("# Title {name}\n\n- item {n}\n> quoted {name}", "# Title Ada\n\n- item 3\n> quoted Ada"),
    ],
)
def test_known_placeholders_are_replaced(prompt: str, expected: str) -> None:
    assert text(prompt) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "{unknown}",
        "{name.upper}",
        "{items[0]}",
        "{name!r}",
        "{name:>10}",
        "{ name }",
        "{}",
        "{0}",
        "{1name}",
        "{",
        "}",
        "{In[99]}",
        "{In[-99]}",
        "{Out[1]}",
        "{Out[-1]}",
        "{In[ 1 ]}",
        "{In[1:2]}",
        "{In[x]}",
        "{In[" + "9" * 5000 + "]}",
    ],
)
def test_everything_else_stays_as_typed(prompt: str) -> None:
    result = expand(prompt, NAMESPACE, token=TOKEN)
    assert result == Expansion(prompt, (), ())


@pytest.mark.parametrize(
    "prompt",
    [
        '{"model": "llama", "input": {"prompt": "hi", "top_p": 0.9} }',
        "config = {'a': 1, 'b': {'c': [1, 2]} }",
        "{x for x in range(3)}",
        'print(f"{value!r:>10} and {other}")',
        r"\frac{a}{b} + \sqrt{\alpha^{2} } \begin{pmatrix} 1 \end{pmatrix}",
        "function() { return {a: 1}; }",
    ],
)
def test_single_braces_outside_code_stay_as_typed(prompt: str) -> None:
    assert text(prompt) == prompt


def test_missing_history_is_left_alone() -> None:
    assert expand("{In[1]} {Out[1]}", {}).text == "{In[1]} {Out[1]}"


@pytest.mark.parametrize("history", [None, 5, "abc"[:0], object()])
def test_odd_history_values_never_raise(history: object) -> None:
    prompt = "{In[1]} {Out[2]}"
    assert expand(prompt, {"In": history, "Out": history}).text == prompt


def test_a_broken_str_leaves_the_placeholder() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    result = expand("{obj} {name}", {"obj": Broken(), "name": "Ada"})
    assert result == Expansion("{obj} Ada", ("{name}",), ())


def test_whole_history_names_are_plain_names() -> None:
    assert expand("{Out}", {"Out": {1: "x"}}).text == "{1: 'x'}"


def test_values_are_not_expanded_again() -> None:
    assert expand("{a}", {"a": "{b} `{b}` {{", "b": "no"}).text == "{b} `{b}` {{"


# -- code is never touched ------------------------------------------------------------------------

SNIPPET = 'headers = {"Authorization": f"Bearer {key}"}\nprint(f"row {i}: {name}")  # {{x}}'


@pytest.mark.parametrize(
    "prompt",
    [
        f"```python\n{SNIPPET}\n```",
        f"~~~\n{SNIPPET}\n~~~",
        f"````\n```\n{SNIPPET}\n```\n````",  # a longer fence holds a shorter one
        f"   ```\n{SNIPPET}\n   ```",  # up to three spaces before a fence
        f"- a list item:\n\n  ```\n  {SNIPPET.replace(chr(10), chr(10) + '  ')}\n  ```",
        f"1. step\n   ~~~ py\n   {SNIPPET.replace(chr(10), chr(10) + '   ')}\n   ~~~",
        f"> quoted:\n> ```\n> {SNIPPET.replace(chr(10), chr(10) + '> ')}\n> ```",
        f"> - nested\n>   ```\n>   {SNIPPET.replace(chr(10), chr(10) + '>   ')}\n>   ```",
        f"```\n{SNIPPET}",  # an unclosed fence runs to the end
        f"    {SNIPPET.replace(chr(10), chr(10) + '    ')}",  # indented code
        f"\t{SNIPPET.replace(chr(10), chr(10) + chr(9))}",  # indented with tabs
        "`{name}` and `{key}` and `{{x}}`",
        "``{name} ` {i}`` and ``` `{n}` ```",
        "`` `{name}` ``",
    ],
)
def test_code_comes_through_as_typed(prompt: str) -> None:
    assert expand(prompt, NAMESPACE, token=TOKEN) == Expansion(prompt, (), ())


def test_code_and_prose_in_one_prompt() -> None:
    prompt = (
        "Review this for {name}:\n\n"
        "```python\n"
        'token = f"Bearer {key}"\n'
        "```\n\n"
        "Call `fetch({i})` {n} times; print {{i}}.\n\n"
        "    indented {name}\n"
    )
    assert text(prompt) == (
        "Review this for Ada:\n\n"
        "```python\n"
        'token = f"Bearer {key}"\n'
        "```\n\n"
        "Call `fetch({i})` 3 times; print {i}.\n\n"
        "    indented {name}\n"
    )


def test_the_info_string_belongs_to_the_fence() -> None:
    namespace = {"r": "R", "python": "no"}
    assert expand("```{r}\nx\n```\n{r}", namespace).text == "```{r}\nx\n```\nR"
    assert expand("~~~ {python} {r}\n~~~", namespace).text == "~~~ {python} {r}\n~~~"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (r"\`{name}\`", r"\`Ada\`"),  # escaped backticks open no code span
        (r"\``{name}`", r"\``{name}`"),  # the escaped one is text; the next two make a span
        (r"`\`{name}`", r"`\`Ada`"),  # no escapes inside code: "`\`" is the span
        ("`{name}", "`Ada"),  # no closing backtick: not code
        ("``{name}`", "``Ada`"),  # runs of different lengths do not match
        ("`a\n{name}`", "`a\n{name}`"),  # a span may cross a line end
        ("`a\n\n{name}`", "`a\n\nAda`"),  # but not a paragraph break
        ("text\n    {name}", "text\n    Ada"),  # an indented line continues a paragraph
        ("- item\n\n      {name}", "- item\n\n      {name}"),  # indented code in a list item
        ("- ```\n  {name}\n- {name}", "- ```\n  {name}\n- Ada"),  # unclosed: to the item's end
        ("> ```\n> {name}\n\n{name}", "> ```\n> {name}\n\nAda"),  # to the quote's end
        ("> ```\n> {name}\n{name}", "> ```\n> {name}\nAda"),  # no lazy lines in a fence
        ("```\n{name}\n```\n{name}", "```\n{name}\n```\nAda"),
        ("~~~\n{name}\n```\n{name}", "~~~\n{name}\n```\n{name}"),  # ``` does not close ~~~
        ("``` `x`\n{name}", "``` `x`\nAda"),  # a backtick info string: not a fence
        ("<span>`</span>{name}`", "<span>`</span>{name}`"),  # raw HTML does not stop a span
        ('<a title="`">{name}`', '<a title="`">Ada`'),  # but a tag binds tighter than code
        ("<http://x/`>{name}`", "<http://x/`>Ada`"),  # and so does an autolink
        ("![`{name}`](x.png)", "![`{name}`](x.png)"),  # code in alt text
        ("[`{name}`](u) [{name}](u)", "[`{name}`](u) [Ada](u)"),
    ],
)
def test_what_is_code_is_what_commonmark_says(prompt: str, expected: str) -> None:
    assert text(prompt) == expected


def inline(markdown: str) -> list[Any]:
    """The inline tokens of the last paragraph."""
    return [t for t in MarkdownIt("commonmark").parse(markdown) if t.type == "inline"][-1].children or []


def test_brackets_of_history_placeholders_stay_visible_to_links() -> None:
    # [1] is a link here, so the outer link fails and the title's backticks make a code span.
    prompt = '[1]: /x\n\n[see {In[1]}](/u "`{name}`")'
    assert inline(prompt)[-2].content == "{name}"
    assert text(prompt) == '[1]: /x\n\n[see x = 1](/u "`{name}`")'


def test_reference_labels_with_placeholders_still_match() -> None:
    # [foo {n}] is a link, so the outer brackets are text and `{name}` is a code span.
    prompt = '[foo {n}]: /u\n\n[bar [foo {n}]](/v "`{name}`")'
    assert text(prompt) == '[foo 3]: /u\n\n[bar [foo 3]](/v "`{name}`")'


def test_an_email_autolink_errs_on_the_safe_side() -> None:
    # CommonMark makes <me{name}`@x.org> an autolink, so its backtick opens nothing and {n}
    # is prose; the marker breaks the autolink, so {n} is taken for code and kept as typed.
    prompt = "<me{name}`@x.org> {n}`"
    assert inline(prompt)[0].type == "link_open"
    assert text(prompt) == "<meAda`@x.org> {n}`"


# -- {{ and }} ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("{{name}} {name}", "{name} Ada"),
        ("{{In[1]}} {{Out[-1]}}", "{In[1]} {Out[-1]}"),
        ("{{{name}}}", "{{name}}"),
        ("{{name}", "{Ada"),
        ("{name}}}", "Ada}}"),
        # Doubled braces that escape no placeholder stay as typed: JSON and LaTeX keep theirs.
        ("{{", "{{"),
        ("}}", "}}"),
        ("{{}}", "{{}}"),
        ("{{ {unknown} }}", "{{ {unknown} }}"),
        ('{"a": {"b": 1}}', '{"a": {"b": 1}}'),
        (r"x^{y^{2}} {name}", r"x^{y^{2}} Ada"),
    ],
)
def test_doubled_braces_escape_a_placeholder_and_nothing_else(prompt: str, expected: str) -> None:
    result = expand(prompt, NAMESPACE)
    assert result.text == expected
    assert all(name == "{name}" for name in result.names)  # escapes are not reported


@pytest.mark.parametrize(
    "prompt",
    [
        "`{{name}}` and `}}{{`",
        '```json\n{"a": {"b": 1}}\n```',
        '    {"a": {"b": 1}}',
        "``{{{name}}}``",
    ],
)
def test_doubled_braces_inside_code_stay_as_typed(prompt: str) -> None:
    assert expand(prompt, NAMESPACE) == Expansion(prompt, (), ())


# -- the token --------------------------------------------------------------------------------------


def test_a_value_equal_to_the_token_is_withheld() -> None:
    result = expand("Use {key} for {name}.", NAMESPACE, token=TOKEN)
    assert result == Expansion("Use {key} for Ada.", ("{name}",), ("{key}",))


def test_a_value_containing_the_token_is_withheld() -> None:
    namespace = {**NAMESPACE, "config": {"auth": TOKEN}, "In": ["", f"token = {TOKEN!r}"]}
    result = expand("{header}\n{config}\n{In[1]}\n{header}", namespace, token=TOKEN)
    assert result.text == "{header}\n{config}\n{In[1]}\n{header}"
    assert result.names == ()
    assert result.withheld == ("{header}", "{config}", "{In[1]}")
    assert TOKEN not in repr(result)


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_means_no_check(token: str | None) -> None:
    result = expand("{key}", NAMESPACE, token=token)
    assert result == Expansion(TOKEN, ("{key}",), ())


def test_a_placeholder_in_code_is_neither_expanded_nor_withheld() -> None:
    assert expand("`{key}`", NAMESPACE, token=TOKEN) == Expansion("`{key}`", (), ())


# -- what the result reports --------------------------------------------------------------------------


def test_names_are_reported_as_written_in_order_once() -> None:
    prompt = "{n} {name} {unknown} {n} `{i}` {In[1]} {In[-3]} {Out[7]} {{name}} {name} {key} {key}"
    result = expand(prompt, NAMESPACE, token=TOKEN)
    assert result.names == ("{n}", "{name}", "{In[1]}", "{In[-3]}", "{Out[7]}")
    assert result.withheld == ("{key}",)


def test_the_result_is_a_small_frozen_value() -> None:
    result = expand("{name}", NAMESPACE)
    assert result == Expansion(text="Ada", names=("{name}",), withheld=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "x"  # type: ignore[misc]
    assert expand("no braces", {}) == Expansion("no braces")


# -- size -------------------------------------------------------------------------------------------


def test_a_100_kb_prompt_is_expanded_in_one_pass() -> None:
    chunk = "Prose {name} {{x}} {unknown}.\n\n```py\nf'{name} {key}'\n```\n\n`{n}` and {n}\n\n"
    done = "Prose Ada {x} {unknown}.\n\n```py\nf'{name} {key}'\n```\n\n`{n}` and 3\n\n"
    copies = 100_000 // len(chunk) + 1
    result = expand(chunk * copies, NAMESPACE, token=TOKEN)
    assert result == Expansion(done * copies, ("{name}", "{n}"), ())


def test_100_kb_of_placeholders() -> None:
    prompt = "{i}" * 34_000  # one paragraph holding 34,000 candidates
    assert expand(prompt, NAMESPACE).text == "7" * 34_000
    fenced = "```\n" + prompt + "\n```"
    assert expand(fenced, NAMESPACE).text == fenced


# -- properties ---------------------------------------------------------------------------------------

BRACEY = st.text(alphabet=st.sampled_from("{}[]-0123456789 ._\n!:xyInOut\\\"'"))
NAMES = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
        lambda k: k not in ("In", "Out")
    ),
    st.integers(),
    max_size=5,
)


@given(prompt=st.one_of(st.text(), BRACEY), namespace=NAMES)
def test_text_without_namespace_names_is_unchanged(prompt: str, namespace: dict[str, int]) -> None:
    prompt = re.sub(r"\}\}+", "}", re.sub(r"\{\{+", "{", prompt))  # no escapes
    assume(not any("{" + name + "}" in prompt for name in namespace))
    assert expand(prompt, namespace).text == prompt


# Markdown made of the pieces that decide what is code, and placeholders. Values are letters,
# and the pieces have no "<", "(", ":", "!" or "&": no HTML, autolink, link or entity can form,
# so an expansion outside code cannot change what is code.
PIECES = st.sampled_from(
    ["{x}", "{y}", "{zz}", "{In[1]}", "{Out[-1]}", "{Out[2]}", "{{", "}}", "{", "}", "`", "``",
     "```", "~~~", "\n", "\n\n", "    ", "\t", " ", "> ", "- ", "1. ", "\\", "a", "[", "]", "*", "_"]
)
MARKDOWN = st.one_of(
    st.lists(PIECES, max_size=40).map("".join),
    st.text(alphabet=st.sampled_from("`~ \n\t>-*_\\[]{}xyInOut12.a"), max_size=60),
)
LETTERS: dict[str, Any] = {"x": "ab", "y": "c", "In": ["a", "bb", "ccc"], "Out": {1: "d", 2: "ee"}}
PARSER = MarkdownIt("commonmark")


def code_of(markdown: str) -> list[tuple[str, str, str]]:
    """Every code token the parser sees, with its content and info string."""
    found: list[tuple[str, str, str]] = []

    def walk(tokens: list[Any]) -> None:
        for token in tokens:
            if token.type in ("code_inline", "code_block", "fence"):
                found.append((token.type, token.content, token.info))
            walk(token.children or [])

    walk(PARSER.parse(markdown))
    return found


@settings(max_examples=300)
@given(prompt=MARKDOWN)
def test_code_is_byte_identical_after_expansion(prompt: str) -> None:
    assert code_of(expand(prompt, LETTERS).text) == code_of(prompt)


@settings(max_examples=300)
@given(prompt=MARKDOWN)
def test_each_placeholder_is_expanded_exactly_when_outside_code(prompt: str) -> None:
    # An independent oracle: put letters in place of one candidate at a time and ask the
    # parser whether they land in code.
    def in_code(start: int, end: int) -> bool:
        probe = prompt[:start] + "QQQ" + prompt[end:]
        return any("QQQ" in content + info for _, content, info in code_of(probe))

    expected, last = [], 0
    for match in re.finditer(r"\{\{((?:In|Out)\[-?\d+\]|[^\W\d]\w*)\}\}|\{(?:(In|Out)\[(-?\d+)\]|([^\W\d]\w*))\}",
                             prompt):
        expected.append(prompt[last : match.start()])
        last = match.end()
        written = match.group()
        if in_code(*match.span()):
            expected.append(written)
        elif match[1] is not None:
            expected.append(written[1:-1])
        elif match[4] is not None:
            expected.append(str(LETTERS.get(match[4], written)))
        else:
            history = LETTERS[match[2]]
            index = int(match[3])
            ok = index in history if isinstance(history, dict) else -len(history) <= index < len(history)
            expected.append(str(history[index]) if ok else written)
    expected.append(prompt[last:])
    assert expand(prompt, LETTERS).text == "".join(expected)


# -- {Err} and {Err[n]}: the notebook's errors -----------------------------------------------------


class Errors:
    """A stand-in for errors_context.ErrorLookup: cell 3 failed; the others refuse."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def __getitem__(self, count: int) -> str:
        self.asked.append(count)
        if count != 3:
            raise InvalidRequestError(f"{{Err[{count}]}}: cell In[{count}] raised no error")
        return "Traceback: ZeroDivisionError"

    def _placeholder_text_(self) -> str:
        self.asked.append("latest")
        return "Traceback: the latest"


def test_err_expands_to_the_errors_the_namespace_holds() -> None:
    errors = Errors()
    expansion = expand("Explain {Err} and {Err[3]}, not {{Err[3]}}.", {"Err": errors})
    assert expansion.text == "Explain Traceback: the latest and Traceback: ZeroDivisionError, not {Err[3]}."
    assert expansion.names == ("{Err}", "{Err[3]}")


def test_err_for_a_cell_without_an_error_refuses_the_prompt_outside_code_only() -> None:
    with pytest.raises(InvalidRequestError, match=r"Err\[99\]"):
        expand("Explain {Err[99]}", {"Err": Errors()})
    errors = Errors()
    kept = expand("Keep `{Err[99]}` and\n```\n{Err}\n```\n", {"Err": errors})
    assert kept.text == "Keep `{Err[99]}` and\n```\n{Err}\n```\n"
    assert "latest" not in errors.asked  # the latest error is worked out only where it is used


def test_err_without_a_namespace_entry_stays_as_typed() -> None:
    assert text("{Err} {Err[2]}") == "{Err} {Err[2]}"
