"""The ``%%replicate`` options, declared once: each ``CellOptions`` field carries its flag.

``replicate_arguments`` turns the fields into IPython ``magic_arguments`` (so ``%%replicate?``
shows generated help), ``parse_cell_options`` turns a magic line into a validated, frozen
``CellOptions``, and ``flag_parser`` builds the CLI's parser from the same fields. User
mistakes raise a one-line ``UsageError`` that names the option. A generation setting's
bounds and help are declared in ``settings.py``; a new one touches its field here, its
declaration there, and its mapping onto model inputs (``inputs.py``, ``request.py``).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .attachments import FileSource
from .conversation import CHAT_NAME, CHAT_NAME_RULE
from .option_rules import (
    MAX_MODELS,
    context_names,
    image_sources,
    input_pairs,
    matching,
    model_names,
    stop_list,
    variable_name,
)
from .settings import SETTINGS, Setting

__all__ = ["CellOptions", "MAX_MODELS", "flag_parser", "line_over", "model_names", "options_from",
           "parse_cell_options", "replicate_arguments"]

_F = TypeVar("_F", bound=Callable[..., Any])

FORMATS = SETTINGS["output_format"].choices
_METAVARS = {float: "FLOAT", int: "INT", str: "TEXT"}
_FLAG = "flag"  # the metadata key of a field's _Flag


@dataclass(frozen=True)
class _Flag:
    """How one field appears on the magic line, and the rule its value must follow."""

    names: tuple[str, ...]
    argparse: Mapping[str, Any]
    # Turns the parsed value into the field's value; raises ValueError(reason) when invalid.
    rule: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _option(*names: str, rule: Callable[[Any], Any] = _same, setting: Setting | None = None,
            **kwargs: Any) -> Any:
    """A dataclass field that also declares its flag; ``default``/``hash`` go to ``field``.

    With a ``setting``, its type, help and rule (its bounds) are the declared ones.
    """
    if setting is not None:
        kwargs = {"type": setting.type, "metavar": _METAVARS[setting.type], "help": setting.help, **kwargs}
        rule = setting.check
    field_kwargs = {k: kwargs.pop(k) for k in ("default", "default_factory", "hash") if k in kwargs}
    if "default_factory" not in field_kwargs:
        field_kwargs.setdefault("default", None)
    return field(**field_kwargs, metadata={_FLAG: _Flag(names, MappingProxyType(kwargs), rule)})


# -- the options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellOptions:
    """What one ``%%replicate`` line asked for. ``None`` means "not given": use the config."""

    # Repeatable: several -m ask every model the same prompt, side by side (compare.py).
    models: tuple[str, ...] = _option(
        "-m", "--model", action="append", metavar="MODEL", rule=model_names, default=(),
        help=SETTINGS["model"].help + "; repeat it (-m A -m B, up to 6) to ask every model at once "
        "and see the replies side by side, with their metrics: -o then gets a dict model -> reply "
        "(None for one that failed), the history is sent to each and nothing is recorded",
    )
    temperature: float | None = _option("-t", "--temperature", setting=SETTINGS["temperature"])
    top_p: float | None = _option("--top-p", setting=SETTINGS["top_p"])
    top_k: int | None = _option("--top-k", setting=SETTINGS["top_k"])
    max_tokens: int | None = _option("--max-tokens", setting=SETTINGS["max_tokens"])
    stop: tuple[str, ...] = _option(
        "--stop", action="append", metavar="TEXT", rule=stop_list, default=(),
        help="stop the reply at this text; repeat for several",
    )
    system: str | None = _option("-s", "--system", metavar="TEXT", help=SETTINGS["system"].help)
    inputs: Mapping[str, Any] = _option(
        "-i", "--input", action="append", metavar="KEY=VALUE", rule=input_pairs,
        default_factory=lambda: MappingProxyType({}), hash=False,  # a mappingproxy is unhashable
        help="extra model input, repeatable; VALUE is read as JSON when it parses "
        "(seed=3, flag=true), else as text. VALUE @PATH sends that local file, @{name} the "
        "notebook variable name (bytes, a path, or a PIL image, sent as PNG): as a data URI "
        "under 1 MB, else uploaded to Replicate's Files API (up to 100 MB); '\"@text\"' is the text @text",
    )
    images: tuple[FileSource, ...] = _option(
        "--image", action="append", metavar="PATH", rule=image_sources, default=(),
        help="attach an image (a file, or @{name} for a variable) to the prompt, in the input this "
        "model's schema declares for images (image, image_input, ...); repeat for a model that takes "
        "several; a model with no image input is an error and nothing is sent",
    )
    chat: str = _option(
        "-c", "--chat", metavar="NAME", default="default",
        rule=matching(CHAT_NAME, CHAT_NAME_RULE),
        help="conversation to continue (default: default)",
    )
    new: bool = _option(
        "--new", action="store_true", default=False, help="start that conversation afresh"
    )
    no_history: bool = _option(
        "--no-history", action="store_true", default=False,
        help="one-shot: neither send nor record the conversation",
    )
    no_expand: bool = _option(
        "--no-expand", action="store_true", default=False,
        help="send the cell as typed; by default, outside code only, {name}, {In[n]} and "
        "{Out[n]} become their values, {Err} the most recent error's traceback and {Err[n]} that of "
        "cell n, and {{name}} becomes {name}",
    )
    context: tuple[str, ...] = _option(
        "--context", action="append", metavar="NAME", rule=context_names, default=(),
        help="add the variable NAME after the prompt, under its name, within context_budget tokens (about 4 "
        "characters each): a DataFrame or Series as its shape, columns and dtypes, first rows and a numeric "
        "summary, a dict or list as JSON cut to fit, a long string cut with a note, anything else its repr; "
        "repeatable; a missing variable, or one that cannot be written out, fails the cell before anything is sent",
    )
    template: str | None = _option(
        "-T", "--template", metavar="NAME", rule=matching(CHAT_NAME, CHAT_NAME_RULE),
        help="run the saved template NAME (saved by %%replicate template NAME from the last cell run): "
        "the cell's text fills its {input} (or follows its prompt when it has none), its flags apply and "
        "the flags on this line win (-i and --context add to its own)",
    )
    cache: bool = _option(
        "--cache", action="store_true", default=False,
        help="replay the reply from the local log when it holds this model and input (no request, "
        "no bill); else ask and log it",
    )
    refresh: bool = _option(
        "--refresh", action="store_true", default=False,
        help="ask Replicate even when the log holds a reply, and log the new one",
    )
    out: str | None = _option(
        "-o", "--out", metavar="NAME", rule=variable_name,
        help="also store the reply in this variable: its text, or for a model that makes files, "
        "the file (or a list of them) with .url, .content_type, .read() and .save(path)",
    )
    each: str | None = _option(
        "--each", metavar="NAME", rule=variable_name,
        help="ask once per element of the variable NAME (a list, dict, pandas Series or DataFrame...): the "
        "cell is a template in which {item} is the element, {index} its key and {column} a field of a row; "
        "items are independent (no history), -o gets the replies in order (None where one failed)",
    )
    concurrency: int | None = _option("--concurrency", setting=SETTINGS["concurrency"], metavar="N")
    yes: bool = _option(
        "--yes", action="store_true", default=False,
        help="run an --each batch of more than 1,000 items (without it, such a batch only says what it would do)",
    )
    save: str | None = _option(
        "--save", metavar="DIR",
        help="also write each output file to this directory, as <prediction id>-<name>",
    )
    format: str | None = _option(
        "-f", "--format", choices=(*FORMATS, "code", "json"), metavar="markdown|text|code|json",
        help="show the reply as Markdown or plain text; code: as Markdown, and its first fenced code block "
        "(the whole reply when it has none) goes into a new cell below (in terminal IPython, the next prompt); "
        "json: the model is asked for JSON only, the reply shows as text and is read as JSON (a ```json block, "
        "else the JSON value in it, text around it left out): -o gets the Python object, and a reply with no "
        "JSON is asked again once, then fails; code and json are for this cell only, not an output_format setting",
    )
    schema: str | None = _option(
        "--schema", metavar="NAME", rule=variable_name,
        help="answer in JSON that follows the schema in the variable NAME: a JSON Schema dict, a pydantic model "
        "class (-o then gets its instance) or a compact string such as 'name str, age int, tags list[str]' "
        "(str, int, float, bool, list[T]; 'name? str' may be null); sent in the model's own structured-output "
        "input (json_schema, response_format...) where its schema declares one, else in the prompt; the answer "
        "is checked, an invalid one is asked again once with what is wrong, and a second failure is one line, "
        "-o keeping the reply's text (implies -f json)",
    )
    timeout: float | None = _option("--timeout", setting=SETTINGS["timeout"], metavar="SECONDS")

    @property
    def model(self) -> str | None:
        """The (first) model asked for, None when no -m was given: the configured one applies."""
        return self.models[0] if self.models else None


def _flags() -> list[tuple[Field[Any], _Flag]]:
    return [(f, f.metadata[_FLAG]) for f in fields(CellOptions)]


def replicate_arguments(func: _F) -> _F:
    """Declare every ``CellOptions`` flag on a magic, so ``%%replicate?`` lists them (as
    IPython's ``script_args`` does). Lines are parsed by ``parse_cell_options``."""
    # argparse reads the decorators innermost first; applying them in reverse keeps field order.
    for f, flag in reversed(_flags()):
        func = argument(*flag.names, dest=f.name, **flag.argparse)(func)
    return magic_arguments()(func)


class UsageParser(argparse.ArgumentParser):
    """argparse that raises a one-line ``UsageError`` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(_one_line(message))


def flag_parser(prog: str, only: Collection[str] | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """A parser for the ``CellOptions`` flags (those named in ``only``, else all of them).

    Flags left out are refused as unrecognized, never accepted and ignored. No abbreviations:
    "--temp" must not quietly mean --temperature, nor "--max" --max-tokens.
    """
    parser = UsageParser(prog=prog, allow_abbrev=False, **kwargs)
    for f, flag in _flags():
        if only is None or f.name in only:
            parser.add_argument(*flag.names, dest=f.name, **flag.argparse)
    return parser


def options_from(namespace: argparse.Namespace) -> CellOptions:
    """Validate parsed flags; a value against its rule raises a ``UsageError`` naming the flag."""
    given: dict[str, Any] = {}
    for f, flag in _flags():
        value = getattr(namespace, f.name, None)
        if value is None:  # not given: the field default applies
            continue
        try:
            given[f.name] = flag.rule(value)
        except ValueError as err:
            raise UsageError(f"argument {'/'.join(flag.names)}: {err}") from None
    options = CellOptions(**given)
    _check_answer_flags(options)
    return options


def _check_answer_flags(options: CellOptions) -> None:
    """-f json and --schema want one JSON answer: no other format, one model."""
    if options.schema is not None and options.format not in (None, "json"):
        raise UsageError(f"argument --schema: asks for a JSON answer, and -f {options.format} for another "
                         "kind; leave -f out or use -f json")
    if (options.schema is not None or options.format == "json") and len(options.models) > 1:
        raise UsageError("argument -f/--format: a JSON answer (-f json, --schema) takes one model; with several "
                         "-m the replies are shown side by side as text")


# Taken from Python as they are (the flags' rules parse their command-line text).
_AS_GIVEN = {"inputs": lambda v: MappingProxyType(dict(v)),
             "stop": lambda v: (v,) if isinstance(v, str) else tuple(str(s) for s in v)}
# Flags that have no meaning for a call from Python.
_NOT_FROM_PYTHON = {"out", "each", "images", "format", "context", "template", "schema"}


def options_of(values: Mapping[str, Any]) -> CellOptions:
    """Options given as Python keywords (``replicate_magic.ask``/``map``), checked by the same
    rules as the flags; a bad value raises ValueError naming it, an unknown name TypeError."""
    if "model" in values:  # one model, as Python names it: the -m flag's field holds them all
        values = {**{k: v for k, v in values.items() if k != "model"},
                  **({"models": [values["model"]]} if values["model"] is not None else {})}
    flags = {f.name: flag for f, flag in _flags()}
    unknown = sorted(set(values) - set(flags) | set(values) & _NOT_FROM_PYTHON)
    if unknown:
        allowed = ", ".join(sorted(set(flags) - _NOT_FROM_PYTHON - {"models"} | {"model"}))
        raise TypeError(f"unknown setting {', '.join(unknown)}; the settings are: {allowed}")
    given: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        try:
            given[name] = _AS_GIVEN[name](value) if name in _AS_GIVEN else flags[name].rule(value)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name}: {err}") from None
    return CellOptions(**given)


_cell_parser: argparse.ArgumentParser | None = None


def parse_cell_options(line: str) -> CellOptions:
    """Parse and validate a ``%%replicate`` line; mistakes raise a one-line ``UsageError``."""
    global _cell_parser
    # Not IPython's parse_argstring: its arg_split keeps the quote characters (-s "be brief"
    # would give '"be brief"'). shlex in POSIX mode drops them, as %%script does.
    try:
        argv = shlex.split(line)
    except ValueError as err:  # "No closing quotation"
        raise UsageError(f"cannot read the %%replicate line: {err}") from None
    if "-h" in argv or "--help" in argv:
        raise UsageError("%%replicate takes no -h: run %%replicate? (or %replicate? in a cell) to see every option")
    if _cell_parser is None:
        _cell_parser = flag_parser("%%replicate", add_help=False)
    namespace, extra = _cell_parser.parse_known_args(argv)
    _reject_extra(extra)
    return options_from(namespace)


# Flags whose values a line adds to a template's rather than replacing them.
_ADDED = {"inputs", "context"}


def line_over(base: str, line: str) -> str:
    """The ``%%replicate`` line that ``line`` over ``base`` (a template's line) means, as one line.

    A flag that ``line`` gives wins over the same flag of ``base``; ``-i`` pairs merge key by
    key (``line``'s win) and ``--context`` names add up; every other flag of ``base`` stays.
    ``-T`` itself is left out. Each line is checked first, as ``parse_cell_options`` checks one.
    """
    parse_cell_options(base)
    parse_cell_options(line)
    parser = flag_parser("%%replicate", add_help=False)
    under, _ = parser.parse_known_args(shlex.split(base))
    over, _ = parser.parse_known_args(shlex.split(line))
    words: list[str] = []
    for f, flag in _flags():
        mine, theirs = getattr(over, f.name, None), getattr(under, f.name, None)
        if f.name == "template":
            continue
        if f.name in _ADDED and mine and theirs:
            if f.name == "inputs":  # by key, in order: the base's keys first, the line's values win
                pairs = {pair.partition("=")[0]: pair for pair in [*theirs, *mine]}
                value: Any = list(pairs.values())
            else:
                value = list(dict.fromkeys([*theirs, *mine]))
        else:
            value = theirs if mine is None or mine is False else mine  # not given: None (False for a switch)
        long = next(name for name in flag.names if name.startswith("--"))
        if value is None or value is False:
            continue
        if value is True:
            words.append(long)
        elif isinstance(value, list):
            words += [f"{long}={item}" for item in value]
        else:
            words.append(f"{long}={value}")
    return shlex.join(words)


def _reject_extra(extra: list[str]) -> None:
    if any(word.startswith("-") for word in extra):
        raise UsageError(_one_line(f"unrecognized arguments: {' '.join(extra)}"))
    if extra:
        raise UsageError(
            _one_line(
                f"unexpected text on the %%replicate line: {' '.join(extra)!r}; "
                "the prompt goes in the cell body, below the line"
            )
        )


def _one_line(message: str) -> str:
    return " ".join(message.splitlines())
