"""The rules the ``%%replicate`` flags' values follow. Pure.

Each rule returns the value to store, or raises ValueError with the reason, which
``options.py`` turns into a one-line UsageError naming the flag (and ``options_of`` into a
ValueError naming the keyword).
"""

from __future__ import annotations

import builtins
import json
import keyword
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .attachments import FileSource, parse_source
from .catalog import resolve_model
from .inputs import DEPLOYMENT_PREFIX, parse_model

__all__ = ["MAX_MODELS", "context_names", "image_sources", "input_pairs", "matching", "model_names", "stop_list",
           "variable_name"]

_INPUT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODEL_NAME = re.compile(r"\S+")  # names and aliases vary; only blank ones are surely wrong


def matching(pattern: re.Pattern[str], allowed: str) -> Callable[[Any], Any]:
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
    value = matching(_MODEL_NAME, allowed)(value)
    # Aliases are many, but none starts with "deployments/": such a name is checked at once
    # (InvalidRequestError is a ValueError, so the UsageError names the flag).
    if value.startswith(DEPLOYMENT_PREFIX):
        parse_model(value)
    return value


MAX_MODELS = 6  # side by side: more columns than this are too narrow to read


def model_names(values: list[str]) -> tuple[str, ...]:
    """Every ``-m`` given, in order: each a valid name, each model once (an alias and the name
    it stands for are the same model), at most ``MAX_MODELS``."""
    names = tuple(_model_name(value) for value in values)
    seen: dict[str, str] = {}
    for name in names:
        model = resolve_model(name)
        if model in seen:
            same = "" if seen[model] == name else f" (as {seen[model]} and {name})"
            raise ValueError(f"{model} is given twice{same}; side by side, name each model once")
        seen[model] = name
    if len(names) > MAX_MODELS:
        raise ValueError(f"{len(names)} models; at most {MAX_MODELS} fit side by side")
    return names


def variable_name(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise ValueError(f"invalid value {value!r} (allowed: a Python variable name)")
    if value in _IPYTHON_NAMES or _IPYTHON_NUMBERED.fullmatch(value) or hasattr(builtins, value):
        raise ValueError(f"invalid value {value!r}: a name Python or IPython already uses; choose another")
    return value


def context_names(values: list[str]) -> tuple[str, ...]:
    for value in values:
        if not value.isidentifier() or keyword.iskeyword(value):
            raise ValueError(f"invalid value {value!r} (allowed: a Python variable name)")
    return tuple(dict.fromkeys(values))  # each once, in order


def stop_list(values: list[str]) -> tuple[str, ...]:
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


def input_pairs(pairs: list[str]) -> Mapping[str, Any]:
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


def image_sources(values: list[str]) -> tuple[FileSource, ...]:
    """``--image photo.png`` (or ``@photo.png``) is a file, ``--image @{name}`` a variable."""
    return tuple(parse_source(v[1:]) if v.startswith("@") else parse_source(v) for v in values)
