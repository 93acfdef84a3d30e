"""{name} expansion in prompts: only what the namespace can fill, everything else untouched."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from replicate_magic.prompt_template import expand

NAMESPACE: dict[str, Any] = {
    "name": "Ada",
    "n": 3,
    "items": [1, 2],
    "nothing": None,
    "café": "crème",
    "In": ["", "x = 1", "print(x)", "df.describe()"],
    "Out": {3: "a table", 7: 42},
}


@pytest.mark.parametrize(
    ("text", "expected"),
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
    ],
)
def test_known_placeholders_are_replaced(text: str, expected: str) -> None:
    assert expand(text, NAMESPACE) == expected


@pytest.mark.parametrize(
    "text",
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
        "{{name}}",
        "{{}}",
        "{{",
        "}}",
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
def test_everything_else_stays_as_typed(text: str) -> None:
    assert expand(text, NAMESPACE) == text


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "llama", "input": {"prompt": "hi", "top_p": 0.9}}',
        "config = {'a': 1, 'b': {'c': [1, 2]}}",
        "{x for x in range(3)}",
        'print(f"{value!r:>10} and {other}")',
        "f'{{literal}} {expr}'",
        r"\frac{a}{b} + \sqrt{\alpha^{2}} \begin{pmatrix} 1 \end{pmatrix}",
        "def f():\n    return {}\n",
        "function() { return {a: 1}; }",
    ],
)
def test_code_with_braces_comes_through(text: str) -> None:
    assert expand(text, NAMESPACE) == text


def test_doubled_braces_are_kept_and_do_not_expand() -> None:
    assert expand("{{name}} {name}", NAMESPACE) == "{{name}} Ada"


def test_missing_history_is_left_alone() -> None:
    assert expand("{In[1]} {Out[1]}", {}) == "{In[1]} {Out[1]}"


@pytest.mark.parametrize("history", [None, 5, "abc"[:0], object()])
def test_odd_history_values_never_raise(history: object) -> None:
    text = "{In[1]} {Out[2]}"
    assert expand(text, {"In": history, "Out": history}) == text


def test_a_broken_str_leaves_the_placeholder() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert expand("{obj} {name}", {"obj": Broken(), "name": "Ada"}) == "{obj} Ada"


def test_whole_history_names_are_plain_names() -> None:
    assert expand("{Out}", {"Out": {1: "x"}}) == "{1: 'x'}"


def test_values_are_not_expanded_again() -> None:
    assert expand("{a}", {"a": "{b}", "b": "no"}) == "{b}"


BRACEY = st.text(alphabet=st.sampled_from("{}[]-0123456789 ._\n!:xyInOut\\\"'"))
NAMES = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
        lambda k: k not in ("In", "Out")
    ),
    st.integers(),
    max_size=5,
)


@given(text=st.one_of(st.text(), BRACEY), namespace=NAMES)
def test_text_without_namespace_names_is_unchanged(text: str, namespace: dict[str, int]) -> None:
    assume(not any("{" + name + "}" in text for name in namespace))
    assert expand(text, namespace) == text
