"""Data in prompts, within a budget (issue 13, item 4): ``{df}``, ``--context NAME`` and
``%config ReplicateMagics.context_budget``.

The pure descriptions first (context.py: DataFrames, Series, containers, long strings, the
budget), then the magic in-process against the emulator: what the emulator received, and the
bad inputs that send nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from traitlets import TraitError

from replicate_magic.context import CHARS_PER_TOKEN, Describer, context_block, describe
from replicate_magic.errors import InvalidRequestError
from replicate_magic.prompt_template import expand

from .conftest import TOKEN

DEFAULT_CHARS = 2000 * CHARS_PER_TOKEN  # the default budget, in characters


def frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "id": np.arange(rows),
        "city": [f"city {i % 97}" for i in range(rows)],
        "price": rng.random(rows) * 100,
        "sold": rng.integers(0, 50, rows),
    })


# -- DataFrames and Series ----------------------------------------------------------------------------


def test_a_100000_row_frame_is_described_within_its_budget():
    df = frame(100_000)
    text = describe(df, DEFAULT_CHARS)
    assert len(text) <= DEFAULT_CHARS
    assert text.startswith("pandas DataFrame: 100,000 rows x 4 columns")
    assert "columns: id (int64), city (" in text and "price (float64), sold (int64)" in text
    assert "| 4 | 4 | city 4 |" in text  # the first rows, as a Markdown table
    assert "(99,995 more rows)" in text
    assert "numeric summary:" in text and "| count | 100,000 | 100,000 | 100,000 |" in text
    assert "city 96" not in text  # row 96 is not in the description


def test_a_million_rows_are_never_written_out_whole(monkeypatch):
    df = frame(1_000_000)

    def whole(*args, **kwargs):
        raise AssertionError("the whole frame was formatted")

    for method in ("to_string", "to_markdown", "__repr__", "__str__", "to_csv", "to_dict"):
        monkeypatch.setattr(pd.DataFrame, method, whole)
    text = describe(df, DEFAULT_CHARS)  # fast because of this: only the cells shown are formatted
    assert "1,000,000 rows" in text and "(999,995 more rows)" in text and len(text) <= DEFAULT_CHARS


@pytest.mark.parametrize("chars", [200, 400, 1000, 3000, 8000, 40_000])
@pytest.mark.parametrize("shape", ["tall", "wide", "long cells", "long names", "empty", "no columns"])
def test_every_description_fits_its_budget(chars, shape):
    df = {
        "tall": frame(5000),
        "wide": pd.DataFrame(np.zeros((20, 300))),
        "long cells": pd.DataFrame({"text": ["word " * 400] * 30, "n": range(30)}),
        "long names": pd.DataFrame({f"{'a very long column name ' * 8}{i}": [i] for i in range(40)}),
        "empty": frame(0),
        "no columns": pd.DataFrame(index=range(10)),
    }[shape]
    text = describe(df, chars)
    assert len(text) <= chars
    assert text.startswith("pandas DataFrame:")


def test_what_is_left_out_is_said():
    wide = pd.DataFrame(np.ones((8, 40)))
    text = describe(wide, DEFAULT_CHARS)
    assert "(3 more rows, 28 more columns)" in text  # the table shows 5 rows and 12 columns
    tight = describe(frame(50), 600)
    assert "more rows" in tight and len(tight) <= 600


def test_cells_are_one_line_and_pipes_cannot_break_the_table():
    df = pd.DataFrame({"note": ["a | b", "two\nlines", "x" * 300]})
    text = describe(df, DEFAULT_CHARS)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1] == "| 0 | a \\| b |"
    assert rows[2] == "| 1 | two lines |"
    assert len(rows[3]) < 60 and rows[3].endswith("… |")


def test_a_series_is_described_with_its_name_dtype_and_summary():
    series = pd.Series(np.arange(100_000, dtype=float), name="price")
    text = describe(series, DEFAULT_CHARS)
    assert text.startswith("pandas Series 'price': 100,000 values, dtype float64")
    assert "(99,995 more values)" in text
    assert "summary: count 100,000, mean 49,999.5" in text


# -- other values ------------------------------------------------------------------------------------

_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_values = st.recursive(_leaves, lambda children: st.lists(children, max_size=5) | st.tuples(children)
                       | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
                       | st.frozensets(st.integers(), max_size=4), max_leaves=30)


@given(_values)
@settings(max_examples=300, deadline=None)
def test_a_container_that_fits_is_written_as_str_writes_it(value):
    assert describe(value, 10_000) == str(value)


@given(_values, st.integers(min_value=20, max_value=400))
@settings(max_examples=300, deadline=None)
def test_a_container_never_exceeds_its_budget(value, chars):
    assert len(describe(value, chars)) <= chars
    assert len(describe(value, chars, style="json")) <= chars


def test_a_huge_list_stops_early_and_says_how_many_it_left_out():
    text = describe(list(range(10_000_000)), 200)
    assert text.startswith("[0, 1, 2, ") and text.endswith("more items)]") and len(text) <= 200
    assert "9,999,9" in text  # "(9,999,9xx more items)"
    assert describe({"k": "v" * 10_000}, 100).startswith("{'k': 'vvvv")


def test_the_json_style_is_json_where_it_fits():
    value = {"name": "Ada", "tags": ("a", "b"), "n": None, "ok": True, "x": 1.5}
    assert json.loads(describe(value, 1000, style="json")) == {"name": "Ada", "tags": ["a", "b"], "n": None,
                                                                "ok": True, "x": 1.5}


def test_a_list_holding_itself_is_written_as_python_writes_it():
    looped: list = [1]
    looped.append(looped)
    assert describe(looped, 100) == str(looped) == "[1, [...]]"


def test_a_long_string_is_cut_with_a_note():
    text = describe("word " * 10_000, 1000)
    assert len(text) <= 1000 and text.endswith("[… 50,000 characters in all; the rest is not shown]")


# -- {name} through the describer ------------------------------------------------------------------------


def test_the_describer_describes_frames_cuts_long_values_and_leaves_short_ones():
    describer = Describer(400)
    namespace = {"df": frame(1000), "long": "x" * 5000, "short": [1, 2], "n": 3}
    result = expand("{df} {long} {short} {n}", namespace, describe=describer)
    assert "pandas DataFrame: 1,000 rows" in result.text and " [1, 2] 3" in result.text
    assert "x" * 5000 not in result.text and "5,000 characters in all" in result.text
    assert describer.notes() == ("described within the context budget: {df}", "cut to the context budget: {long}")
    describer.check()  # nothing failed


def test_verbatim_placeholders_and_error_texts_are_never_cut():
    long = "line\n" * 1000
    describer = Describer(100, verbatim=("{input}",))
    result = expand("{input} {Err}", {"input": long, "Err": long}, describe=describer)
    assert result.text == f"{long} {long}" and describer.notes() == ()


def test_a_value_whose_str_raises_is_named_in_one_line():
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no\nway")

    describer = Describer(400)
    result = expand("{obj} and {n}", {"obj": Broken(), "n": 1}, describe=describer)
    assert result.text == "{obj} and 1"  # as expand always did: the placeholder stays
    with pytest.raises(InvalidRequestError) as caught:
        describer.check()
    assert str(caught.value) == ("Cannot put {obj} in the prompt: writing it out raised RuntimeError: no way; "
                                 "nothing was sent. Fix its __str__, or write {{obj}} for the text {obj}.")


def test_a_described_value_holding_the_token_is_withheld():
    df = pd.DataFrame({"secret": [TOKEN]})
    result = expand("{df}", {"df": df}, token=TOKEN, describe=Describer(4000))
    assert result.text == "{df}" and result.withheld == ("{df}",)


# -- --context blocks ---------------------------------------------------------------------------------


def test_each_context_variable_is_labelled_and_fenced():
    namespace = {"cfg": {"a": 1, "b": [1, 2]}, "notes": "some ``` fence", "n": 42}
    text = context_block(["cfg", "notes", "n"], namespace, 2000)
    assert text == ("Variable `cfg` (dict, 2 keys):\n```json\n{\"a\": 1, \"b\": [1, 2]}\n```\n\n"
                    "Variable `notes` (str, 14 characters):\n````\nsome ``` fence\n````\n\n"
                    "Variable `n` (int):\n```\n42\n```")


def test_a_context_variable_stays_within_its_budget():
    for value in (frame(100_000), "x" * 100_000, list(range(100_000)), {str(i): i for i in range(100_000)},
                  "`" * 500 + "x" * 5000, ["`" * 300] * 10):
        assert len(context_block(["v"], {"v": value}, 1000)) <= 1000


@pytest.mark.parametrize(("namespace", "message"), [
    ({}, "--context v: no variable 'v' in the notebook; define it first. Nothing was sent."),
    ({"v": type("Bad", (), {"__repr__": lambda self: 1 / 0})()},
     "--context v: writing it out raised ZeroDivisionError: division by zero; nothing was sent."),
    ({"v": {"key": TOKEN}}, "--context v: its value holds the API token, which is never sent; nothing was sent."),
])
def test_a_context_variable_that_cannot_be_sent_is_one_line(namespace, message):
    with pytest.raises(InvalidRequestError) as caught:
        context_block(["v"], namespace, 1000, token=TOKEN)
    assert str(caught.value) == message


# -- the magic -----------------------------------------------------------------------------------------


@pytest.fixture
def ip(ip):
    """conftest's shell, with the settings a test set taken back."""
    yield ip
    for name in ("context_budget",):
        ip.config.ReplicateMagics.pop(name, None)


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def sent_prompt(emu) -> str:
    return creates(emu)[-1].json["input"]["prompt"]


def ask(ip, line: str, cell: str):
    return ip.run_cell_magic("replicate", line, cell)


def test_a_frame_in_a_prompt_is_sent_as_its_description(ip, env_emu, capsys):
    ip.user_ns["sales"] = frame(100_000)
    ask(ip, "--no-history", "Which city sells most?\n\n{sales}")
    prompt = sent_prompt(env_emu)
    assert prompt.startswith("Which city sells most?\n\npandas DataFrame: 100,000 rows x 4 columns")
    assert len(prompt) <= len("Which city sells most?\n\n") + DEFAULT_CHARS
    assert "(99,995 more rows)" in prompt
    assert "described within the context budget: {sales}" in capsys.readouterr().out


def test_the_budget_is_a_setting(ip, env_emu):
    ip.user_ns["sales"] = frame(1_000_000)
    ip.run_line_magic("config", "ReplicateMagics.context_budget = 100")
    ask(ip, "--no-history", "{sales}")
    small = sent_prompt(env_emu)
    assert len(small) <= 100 * CHARS_PER_TOKEN and "1,000,000 rows" in small
    ip.run_line_magic("config", "ReplicateMagics.context_budget = 5000")
    ask(ip, "--no-history", "{sales}")
    assert len(sent_prompt(env_emu)) > len(small)
    magics = ip.magics_manager.registry["ReplicateMagics"]
    with pytest.raises(TraitError, match=r"context_budget: invalid value 10 \(allowed: a whole number >= 50"):
        magics.context_budget = 10


def test_a_long_value_is_cut_and_the_line_says_so(ip, env_emu, capsys):
    ip.run_line_magic("config", "ReplicateMagics.context_budget = 100")
    ip.user_ns["article"] = "tide " * 1000
    ask(ip, "--no-history", "Summarize: {article}")
    prompt = sent_prompt(env_emu)
    assert len(prompt) <= len("Summarize: ") + 400 and prompt.endswith("5,000 characters in all; the rest is not shown]")
    assert "cut to the context budget: {article}" in capsys.readouterr().out


def test_context_variables_follow_the_prompt_each_under_its_name(ip, env_emu, capsys):
    ip.user_ns.update(sales=frame(10), settings_={"region": "north", "limit": 3}, notes="n" * 20_000)
    ask(ip, "--no-history --context sales --context settings_ --context notes", "What stands out?")
    prompt = sent_prompt(env_emu)
    head, _, rest = prompt.partition("\n\n")
    assert head == "What stands out?"
    assert rest.startswith("Variable `sales`:\npandas DataFrame: 10 rows x 4 columns")
    assert rest.index("Variable `sales`") < rest.index("Variable `settings_` (dict, 2 keys):\n```json\n"
                                                       '{"region": "north", "limit": 3}\n```') \
        < rest.index("Variable `notes` (str, 20,000 characters):")
    assert "20,000 characters in all; the rest is not shown]" in rest
    assert len(rest) <= 3 * DEFAULT_CHARS + 10
    assert "context: sales, settings_, notes" in capsys.readouterr().out


def test_context_goes_with_every_item_of_a_batch(ip, env_emu):
    ip.user_ns.update(reviews=["good", "bad"], glossary={"meh": "mixed"})
    ask(ip, "--each reviews --context glossary", "Label: {item}")
    block = 'Variable `glossary` (dict, 1 key):\n```json\n{"meh": "mixed"}\n```'
    assert sorted(r.json["input"]["prompt"] for r in creates(env_emu)) == [
        f"Label: bad\n\n{block}", f"Label: good\n\n{block}"]


def test_context_goes_to_every_model_side_by_side(ip, env_emu, capsys):
    ip.user_ns["glossary"] = {"meh": "mixed"}
    ask(ip, "-m meta/meta-llama-3-8b-instruct -m meta/meta-llama-3-70b-instruct --context glossary", "Define meh.")
    block = 'Variable `glossary` (dict, 1 key):\n```json\n{"meh": "mixed"}\n```'
    prompts = [r.json["input"]["prompt"] for r in creates(env_emu)]
    assert len(prompts) == 2 and all(p.endswith(f"Define meh.\n\n{block}") for p in prompts), prompts
    assert "context: glossary" in capsys.readouterr().out


@pytest.mark.parametrize(("line", "cell", "message"), [
    ("--context missing", "Hi", "--context missing: no variable 'missing' in the notebook"),
    ("--context broken", "Hi", "--context broken: writing it out raised RuntimeError: no repr"),
    ("", "Look at {broken}", "Cannot put {broken} in the prompt: writing it out raised RuntimeError: no str"),
    ("--context secret", "Hi", "--context secret: its value holds the API token"),
    ("--each items --context missing", "{item}", "--context missing: no variable 'missing'"),
])
def test_bad_context_is_one_line_and_sends_nothing(ip, env_emu, line, cell, message):
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __str__(self) -> str:
            raise RuntimeError("no str")

    ip.user_ns.update(broken=Broken(), secret=f"Bearer {TOKEN}", items=[1, 2])
    with pytest.raises(InvalidRequestError, match="^" + message.replace("(", r"\(").replace("{", r"\{")) as caught:
        ask(ip, line, cell)
    assert "\n" not in str(caught.value)
    assert creates(env_emu) == []


def test_context_names_are_checked_on_the_line(ip, env_emu):
    with pytest.raises(UsageError, match=r"argument --context: invalid value '2x' \(allowed: a Python variable name\)"):
        ask(ip, "--context 2x", "Hi")
    assert creates(env_emu) == []


def test_context_cannot_be_given_from_python(env_emu):
    import replicate_magic

    with pytest.raises(TypeError, match="unknown setting context"):
        replicate_magic.ask("Hi", context=["df"])


# -- a real kernel -------------------------------------------------------------------------------------


def test_a_100000_row_frame_in_a_real_kernel_stays_within_its_budget(tmp_path_factory, emu, own_log):
    """On this venv's kernel (ipykernel 7), which has pandas; the 6.29 venv has none, and the
    description is the same code on both."""
    from .kernel_harness import KernelSession, kernel_env, plain

    ipython_dir = tmp_path_factory.mktemp("ipython")
    env = kernel_env(ipython_dir, REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url,
                     REPLICATE_MAGIC_DB=str(own_log))
    with KernelSession(env, cwd=str(ipython_dir), kernel_name="python3") as kernel:
        kernel.ok("%load_ext replicate_magic")
        kernel.ok("import pandas as pd, numpy as np\n"
                  "sales = pd.DataFrame({'city': [f'c{i % 50}' for i in range(100_000)], 'n': np.arange(100_000)})")
        asked = kernel.ok("%%replicate --no-history --context sales\nWhich city sells most? {sales}", cell_id="a")
        (create,) = creates(emu)
        prompt = create.json["input"]["prompt"]
        head = "Which city sells most? pandas DataFrame: 100,000 rows x 2 columns"
        assert prompt.startswith(head)
        assert "\n\nVariable `sales`:\npandas DataFrame: 100,000 rows x 2 columns" in prompt
        assert prompt.count("(99,995 more rows)") == 2
        assert len(prompt) <= len("Which city sells most? ") + 2 * DEFAULT_CHARS + 2
        assert "c49" not in prompt  # far beyond the first rows
        line = plain(asked.outputs[-1])
        assert "described within the context budget: {sales}" in line and "context: sales" in line
