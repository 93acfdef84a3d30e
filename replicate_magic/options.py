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
import builtins
import json
import keyword
import math
import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .attachments import FileSource, parse_source
from .conversation import CHAT_NAME, CHAT_NAME_RULE
from .inputs import DEPLOYMENT_PREFIX, parse_model
from .settings import SETTINGS, Setting

__all__ = ["CellOptions", "flag_parser", "options_from", "parse_cell_options", "replicate_arguments"]

_F = TypeVar("_F", bound=Callable[..., Any])

FORMATS = SETTINGS["output_format"].choices
_METAVARS = {float: "FLOAT", int: "INT", str: "TEXT"}
_FLAG = "flag"  # the metadata key of a field's _Flag
_INPUT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODEL_NAME = re.compile(r"\S+")  # names and aliases vary; only blank ones are surely wrong


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


# -- rules: each returns the value to store or raises ValueError(reason) ----------------------


def _matching(pattern: re.Pattern[str], allowed: str) -> Callable[[Any], Any]:
    def rule(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid value {value!r} (allowed: {allowed})")
        return value

    return rule


# IPython's own names in the user's namespace: replacing one breaks the shell or its history.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___",
                            "_i", "_ii", "_iii", "_ih", "_oh", "_dh"})
_IPYTHON_NUMBERED = re.compile(r"_i?\d+")  # _3 and _i3: the output and input of cell 3


def _model_name(value: str) -> str:
    allowed = "a model name such as owner/name, owner/name:version or deployments/owner/name"
    value = _matching(_MODEL_NAME, allowed)(value)
    # Aliases are many, but none starts with "deployments/": such a name is checked at once
    # (InvalidRequestError is a ValueError, so the UsageError names the flag).
    if value.startswith(DEPLOYMENT_PREFIX):
        parse_model(value)
    return value


def _variable_name(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise ValueError(f"invalid value {value!r} (allowed: a Python variable name)")
    if value in _IPYTHON_NAMES or _IPYTHON_NUMBERED.fullmatch(value) or hasattr(builtins, value):
        raise ValueError(f"invalid value {value!r}: a name Python or IPython already uses; choose another")
    return value


def _stop_list(values: list[str]) -> tuple[str, ...]:
    if "" in values:  # an empty stop sequence would end every reply at once, or be ignored
        raise ValueError("invalid value '' (allowed: non-empty text)")
    return tuple(values)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity are not JSON; keep them as text


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999 would become inf in the request body
        raise ValueError(text)
    return number


def _json_or_text(text: str) -> Any:
    """``3`` -> 3, ``true`` -> True, ``"3"`` -> "3"; anything that is not JSON stays text."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; [[[... too deep
        return text


# Inputs the request builds itself, and from what.
_BUILT_INPUTS = {
    "prompt": "the prompt you write (and the conversation)",
    "messages": "the prompt you write and the conversation",
    "system_prompt": "-s/--system",
}


def _input_pairs(pairs: list[str]) -> Mapping[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _INPUT_KEY.fullmatch(key):
            allowed = "KEY=VALUE with a name as KEY, e.g. -i seed=3"
            raise ValueError(f"invalid pair {pair!r} (allowed: {allowed})")
        if key in _BUILT_INPUTS:  # sent in their place, they would part what is sent from the history
            raise ValueError(f"{key} is built from {_BUILT_INPUTS[key]}; set it there, not with -i")
        # A file is read when the request is made (a variable's value is the one it has then).
        # JSON never starts with "@", so '"@x"' (a quoted JSON string) still sends the text @x.
        inputs[key] = parse_source(value[1:]) if value.startswith("@") else _json_or_text(value)
    return MappingProxyType(inputs)


def _image_sources(values: list[str]) -> tuple[FileSource, ...]:
    """``--image photo.png`` (or ``@photo.png``) is a file, ``--image @{name}`` a variable."""
    return tuple(parse_source(v[1:]) if v.startswith("@") else parse_source(v) for v in values)


# -- the options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellOptions:
    """What one ``%%replicate`` line asked for. ``None`` means "not given": use the config."""

    model: str | None = _option(
        "-m", "--model", metavar="MODEL", help=SETTINGS["model"].help,
        rule=_model_name,
    )
    temperature: float | None = _option("-t", "--temperature", setting=SETTINGS["temperature"])
    top_p: float | None = _option("--top-p", setting=SETTINGS["top_p"])
    top_k: int | None = _option("--top-k", setting=SETTINGS["top_k"])
    max_tokens: int | None = _option("--max-tokens", setting=SETTINGS["max_tokens"])
    stop: tuple[str, ...] = _option(
        "--stop", action="append", metavar="TEXT", rule=_stop_list, default=(),
        help="stop the reply at this text; repeat for several",
    )
    system: str | None = _option("-s", "--system", metavar="TEXT", help=SETTINGS["system"].help)
    inputs: Mapping[str, Any] = _option(
        "-i", "--input", action="append", metavar="KEY=VALUE", rule=_input_pairs,
        default_factory=lambda: MappingProxyType({}), hash=False,  # a mappingproxy is unhashable
        help="extra model input, repeatable; VALUE is read as JSON when it parses "
        "(seed=3, flag=true), else as text. VALUE @PATH sends that local file, @{name} the "
        "notebook variable name (bytes, a path, or a PIL image, sent as PNG): as a data URI "
        "under 1 MB, else uploaded to Replicate's Files API (up to 100 MB); '\"@text\"' is the text @text",
    )
    images: tuple[FileSource, ...] = _option(
        "--image", action="append", metavar="PATH", rule=_image_sources, default=(),
        help="attach an image (a file, or @{name} for a variable) to the prompt, in the input this "
        "model's schema declares for images (image, image_input, ...); repeat for a model that takes "
        "several; a model with no image input is an error and nothing is sent",
    )
    chat: str = _option(
        "-c", "--chat", metavar="NAME", default="default",
        rule=_matching(CHAT_NAME, CHAT_NAME_RULE),
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
        "{Out[n]} become their values and {{name}} becomes {name}",
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
        "-o", "--out", metavar="NAME", rule=_variable_name,
        help="also store the reply in this variable: its text, or for a model that makes files, "
        "the file (or a list of them) with .url, .content_type, .read() and .save(path)",
    )
    save: str | None = _option(
        "--save", metavar="DIR",
        help="also write each output file to this directory, as <prediction id>-<name>",
    )
    format: str | None = _option(
        "-f", "--format", choices=FORMATS, metavar="markdown|text",
        help="show the reply as Markdown or plain text",
    )
    timeout: float | None = _option("--timeout", setting=SETTINGS["timeout"], metavar="SECONDS")


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
