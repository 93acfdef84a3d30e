"""The %%replicate line: every option, its defaults, and one-line errors for mistakes."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Any

import pytest
from IPython.core.error import UsageError

from replicate_magic.options import CellOptions, parse_cell_options, replicate_arguments


@replicate_arguments
def replicate(self: Any, line: str, cell: str | None = None) -> None:
    """Ask a model hosted on Replicate; the cell is the prompt."""


def parse(line: str) -> CellOptions:
    return parse_cell_options(line)


def test_empty_line_gives_the_defaults() -> None:
    options = parse("")
    assert options == CellOptions()
    assert options.model is None
    assert options.temperature is None
    assert options.top_p is None
    assert options.top_k is None
    assert options.max_tokens is None
    assert options.system is None
    assert options.out is None
    assert options.format is None
    assert options.timeout is None
    assert options.stop == ()
    assert dict(options.inputs) == {}
    assert options.chat == "default"
    assert options.new is False
    assert options.no_history is False
    assert options.no_expand is False


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("-m meta/meta-llama-3-70b-instruct", "model", "meta/meta-llama-3-70b-instruct"),
        ("--model owner/name:abc123", "model", "owner/name:abc123"),
        ("-t 0.2", "temperature", 0.2),
        ("--temperature 0", "temperature", 0.0),
        ("--temperature=1.5", "temperature", 1.5),
        ("--top-p 0.9", "top_p", 0.9),
        ("--top-p 1", "top_p", 1.0),
        ("--top-k 50", "top_k", 50),
        ("--max-tokens 256", "max_tokens", 256),
        ("--stop END", "stop", ("END",)),
        ("--stop #", "stop", ("#",)),  # not a comment
        ("-s terse", "system", "terse"),
        ("--system terse", "system", "terse"),
        ("-c work", "chat", "work"),
        ("--chat notes.v2-draft_1", "chat", "notes.v2-draft_1"),
        ("--new", "new", True),
        ("--no-history", "no_history", True),
        ("--no-expand", "no_expand", True),
        ("-o answer", "out", "answer"),
        ("--out _reply2", "out", "_reply2"),
        ("-f text", "format", "text"),
        ("--format markdown", "format", "markdown"),
        ("--timeout 30", "timeout", 30.0),
        ("--timeout 0.5", "timeout", 0.5),
    ],
)
def test_each_option_is_parsed(line: str, field: str, value: object) -> None:
    assert getattr(parse(line), field) == value


def test_options_combine() -> None:
    options = parse("-m a/b -t 0.2 --top-p 0.5 --top-k 3 --max-tokens 9 -c x --new -o r -f text")
    assert (options.model, options.temperature, options.top_p) == ("a/b", 0.2, 0.5)
    assert (options.top_k, options.max_tokens, options.chat) == (3, 9, "x")
    assert (options.new, options.out, options.format) == (True, "r", "text")


def test_stop_is_repeatable() -> None:
    assert parse('--stop END --stop "###" --stop "two words"').stop == ("END", "###", "two words")


@pytest.mark.parametrize(
    ("line", "inputs"),
    [
        ("-i seed=3", {"seed": 3}),
        ("-i flag=true", {"flag": True}),
        ("-i ratio=0.5", {"ratio": 0.5}),
        ("-i nothing=null", {"nothing": None}),
        ("-i 'x=\"3\"'", {"x": "3"}),
        ("-i name=llama", {"name": "llama"}),
        ("-i empty=", {"empty": ""}),
        ("-i 'eq=a=b'", {"eq": "a=b"}),
        ("-i 'stops=[\"a\", \"b\"]'", {"stops": ["a", "b"]}),
        ("-i 'obj={\"k\": 1}'", {"obj": {"k": 1}}),
        ("-i x=NaN -i y=1e999", {"x": "NaN", "y": "1e999"}),  # not JSON numbers: kept as text
        ("-i seed=3 --input top_p=0.1", {"seed": 3, "top_p": 0.1}),
        ("-i seed=1 -i seed=2", {"seed": 2}),  # the last one wins
    ],
)
def test_input_values_are_json_when_they_parse(line: str, inputs: dict[str, object]) -> None:
    assert dict(parse(line).inputs) == inputs


@pytest.mark.parametrize(
    ("line", "system"),
    [
        ('-s "be brief"', "be brief"),
        ("-s 'be brief'", "be brief"),
        ('--system "it\'s short"', "it's short"),
        ('-s "say \\"hi\\""', 'say "hi"'),
        ('-s ""', ""),
        ('-s "-dash first"', "-dash first"),
    ],
)
def test_quoted_system_prompt(line: str, system: str) -> None:
    assert parse(line).system == system


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("-t -0.1", "-t/--temperature"),
        ("-t nan", "-t/--temperature"),
        ("-t inf", "-t/--temperature"),
        ("-t hot", "-t/--temperature"),
        ("--top-p 0", "--top-p"),
        ("--top-p 1.01", "--top-p"),
        ("--top-k 0", "--top-k"),
        ("--top-k 2.5", "--top-k"),
        ("--max-tokens 0", "--max-tokens"),
        ("--max-tokens many", "--max-tokens"),
        ("--timeout 0", "--timeout"),
        ("--timeout -5", "--timeout"),
        ("-i seed", "-i/--input"),
        ("-i =3", "-i/--input"),
        ("-i 'two words=1'", "-i/--input"),
        ("-i 1st=1", "-i/--input"),
        ("-o class", "-o/--out"),
        ("-o my-var", "-o/--out"),
        ("-o 2x", "-o/--out"),
        ("-c 'two words'", "-c/--chat"),
        ("-c a/b", "-c/--chat"),
        ("-c ''", "-c/--chat"),
        ("-f html", "-f/--format"),
        ("-m ''", "-m/--model"),
        ("--stop ''", "--stop"),
        ("-m", "-m/--model"),
    ],
)
def test_bad_values_raise_one_line_usage_errors(line: str, option: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(line)
    message = str(info.value)
    assert option in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("-t -1", "-1.0"),
        ("-t hot", "'hot'"),
        ("-i seed", "'seed'"),
        ("-o class", "'class'"),
        ("-f html", "'html'"),
    ],
)
def test_errors_name_the_bad_value(line: str, shown: str) -> None:
    with pytest.raises(UsageError, match=re.escape(shown)):
        parse(line)


@pytest.mark.parametrize(
    ("line", "allowed"),
    [
        ("-t -1", ">= 0"),
        ("--top-p 2", "> 0 and <= 1"),
        ("--top-k 0", ">= 1"),
        ("--timeout 0", "> 0"),
        ("-i seed", "KEY=VALUE"),
        ("-f html", "'markdown', 'text'"),
    ],
)
def test_errors_say_what_is_allowed(line: str, allowed: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(line)
    assert allowed in str(info.value)


def test_argparse_message_for_a_bad_float_arrives_as_is() -> None:
    with pytest.raises(UsageError) as info:
        parse("-t hot")
    assert str(info.value) == "argument -t/--temperature: invalid float value: 'hot'"


@pytest.mark.parametrize("line", ["--foo", "--foo 3", "-x", "-m a/b --bogus=1"])
def test_unknown_flag(line: str) -> None:
    with pytest.raises(UsageError, match="unrecognized arguments"):
        parse(line)


@pytest.mark.parametrize("line", ["hello", "explain this", "-m a/b hello", "hello -t 0.2"])
def test_text_on_the_line_points_to_the_cell_body(line: str) -> None:
    with pytest.raises(UsageError, match="cell body") as info:
        parse(line)
    assert "\n" not in str(info.value)


def test_unbalanced_quote_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="No closing quotation"):
        parse('-s "be brief')


def test_generated_help_lists_every_flag() -> None:
    # This docstring is what %%replicate? shows.
    help_text = replicate.__doc__
    assert help_text is not None
    assert "Ask a model hosted on Replicate" in help_text
    flags = "-m --model -t --temperature --top-p --top-k --max-tokens --stop -s --system -i"
    flags += " --input -c --chat --new --no-history --no-expand -o --out -f --format --timeout"
    for flag in flags.split():
        assert f"{flag} " in help_text or f"{flag}," in help_text, flag


def test_help_is_generated_from_the_fields() -> None:
    # Adding a CellOptions field is enough to declare a flag.
    help_text = replicate.__doc__ or ""
    for f in dataclasses.fields(CellOptions):
        assert any(name in help_text for name in f.metadata["flag"].names), f.name


def test_cell_options_are_immutable() -> None:
    options = parse("-i seed=3 --stop a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.model = "x"  # type: ignore[misc]
    assert isinstance(options.inputs, MappingProxyType)
    with pytest.raises(TypeError):
        options.inputs["seed"] = 4  # type: ignore[index]
    assert isinstance(options.stop, tuple)
    assert hash(options) == hash(parse("-i seed=4 --stop a"))  # inputs stay out of the hash
