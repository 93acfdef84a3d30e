"""Structured answers: the JSON in a reply, checked against a schema. Pure.

``-f json`` and ``--schema NAME`` ask for a JSON answer. This module holds what that needs
apart from the network: finding the JSON value in a reply's text (``extract_json``: a
fenced ```json block wins, else the whole reply, else the longest value found by a JSON
parser from some ``{`` or ``[``), the compact schema form (``parse_compact``: ``"name str,
age int, tags list[str]"``), the words sent to a model that has no structured-output input
(``instructions``) and the follow-up sent when an answer is invalid (``retry_messages``).
``answer_format`` turns what ``--schema`` names (a JSON Schema dict, a pydantic model
class, a compact string) into an ``AnswerFormat``, whose ``read`` parses and checks a reply.

jsonschema and markdown-it are imported when first needed, and pydantic never: a pydantic
class is recognised by its type's module and used through its own methods
(``model_json_schema``, ``model_validate``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AnswerFormat", "InvalidAnswer", "answer_format", "extract_json", "instructions", "parse_compact",
           "retry_messages"]

RETRIES = 1  # asks after the first, with the validation error, when an answer is invalid
_MAX_OPENINGS = 2000  # "{" and "[" a reply is scanned from: a bound on the work for a pathological one
_MAX_REASON = 240  # characters of a validation message kept in the one-line reason
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPACT_HELP = "the compact form is 'name str, age int, tags list[str]' (types: str, int, float, bool, list[T]; " \
                "'name? str' or 'str?' may be null)"


class InvalidAnswer(ValueError):
    """The reply is not the JSON asked for; the message says which rule failed, in one line."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json accepts NaN and Infinity; JSON itself does not


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_whole(text: str) -> tuple[bool, Any, str]:
    """(parsed, value, why not): ``text`` as exactly one JSON value, whitespace around it aside."""
    try:
        value, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as error:
        return False, None, f"{error.msg} (line {error.lineno}, column {error.colno})"
    except (ValueError, RecursionError) as error:
        return False, None, str(error) if isinstance(error, ValueError) else "nested too deep"
    if text[end:].strip():
        return False, None, f"text follows the JSON value (from character {end + 1})"
    return True, value, ""


def _fences(text: str) -> list[tuple[str, str]]:
    """(info word, content) of each fenced code block, as CommonMark reads them."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    return [((t.info.split() or [""])[0].lower(), t.content) for t in tokens if t.type == "fence"]


def extract_json(text: str) -> Any:
    """The JSON value a reply holds, with the chatter and fences around it left out.

    In order: the first ```json fenced block that parses (one that does not parse is the
    error, if nothing below is found either); the whole reply; another fenced block that is
    one JSON object or array; else the longest object or array a JSON parser reads from any
    ``{`` or ``[`` in the text. Raises ``InvalidAnswer`` saying why none was found.
    """
    if not text.strip():
        raise InvalidAnswer("the reply is empty, not JSON")
    fences = _fences(text) if "```" in text or "~~~" in text else []
    fence_problem = ""
    for info, content in fences:
        if info == "json":
            parsed, value, why = _decode_whole(content)
            if parsed:
                return value
            fence_problem = fence_problem or f"the ```json block does not parse: {why}"
    parsed, value, why_whole = _decode_whole(text)
    if parsed:
        return value
    for info, content in fences:
        if info != "json":
            parsed, value, _ = _decode_whole(content)
            if parsed and isinstance(value, (dict, list)):
                return value
    found, first_problem = _longest_value(text)
    if found is not None:
        return found[1]
    if fence_problem:
        raise InvalidAnswer(fence_problem)
    if first_problem:
        raise InvalidAnswer(f"the reply's JSON does not parse: {first_problem}")
    raise InvalidAnswer("the reply holds no JSON value (no object or array, and it is not JSON as a whole: "
                        f"{why_whole})")


def _longest_value(text: str) -> tuple[tuple[int, Any] | None, str]:
    """The longest object or array parsed from an opening bracket (values inside one found are
    not tried again), and the parser's complaint at the first opening, for the error."""
    best: tuple[int, Any] | None = None
    first_problem = ""
    position = 0
    openings = [i for i, char in enumerate(text) if char in "{["][:_MAX_OPENINGS]
    for start in openings:
        if start < position:  # inside a value already found
            continue
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as error:
            if not first_problem and text[start] == "{":
                first_problem = f"{error.msg} (line {error.lineno}, column {error.colno})"
            continue
        except (ValueError, RecursionError) as error:  # NaN, or nested beyond the parser
            if not first_problem and text[start] == "{":
                first_problem = str(error) if isinstance(error, ValueError) else "nested too deep"
            continue
        if best is None or end - start > best[0]:
            best = (end - start, value)
        position = end
    return best, first_problem


# -- the compact schema form ----------------------------------------------------------------------

_SCALARS = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
            "number": "number", "bool": "boolean", "boolean": "boolean"}


def _split_top(text: str) -> list[str]:
    """Fields separated by commas or newlines outside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"an unmatched ']' in {text.strip()!r}; {_COMPACT_HELP}")
        if char in ",\n" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"an unclosed '[' in {text.strip()!r}; {_COMPACT_HELP}")
    parts.append("".join(current))
    return parts


def _type(spec: str, field: str) -> dict[str, Any]:
    """The JSON Schema of a compact type: ``int``, ``list[str]``, ``list[list[float]]``, ``str?``."""
    spec = spec.strip()
    nullable = spec.endswith("?")
    if nullable:
        spec = spec[:-1].rstrip()
    schema: dict[str, Any]
    if spec.lower() in _SCALARS:
        schema = {"type": _SCALARS[spec.lower()]}
    elif spec.lower().startswith("list[") and spec.endswith("]"):
        schema = {"type": "array", "items": _type(spec[5:-1], field)}
    elif spec.lower() in ("list", "list[]"):
        raise ValueError(f"{field!r}: say what the list holds, e.g. list[str]; {_COMPACT_HELP}")
    else:
        raise ValueError(f"unknown type {spec!r} in {field!r}; {_COMPACT_HELP}")
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def parse_compact(text: str) -> dict[str, Any]:
    """``"name str, age int, tags list[str]"`` as a JSON Schema object.

    Each field is ``name type`` (or ``name: type``; a field with no type is a string), the
    types ``str``, ``int``, ``float``, ``bool`` and ``list[T]``; ``name? type`` or
    ``type?`` lets it be null (as Python's ``Optional``). Every field is required, and no
    other is allowed: the form OpenAI's strict structured outputs accept. Raises
    ``ValueError`` naming the part that does not parse.
    """
    properties: dict[str, Any] = {}
    for part in _split_top(text):
        field = part.strip()
        if not field:
            continue  # "a str, b int," and blank lines
        match = _NAME.match(field)
        if match is None:
            raise ValueError(f"{field!r} does not start with a field name; {_COMPACT_HELP}")
        name, rest = match.group(0), field[match.end():].strip()
        nullable = rest.startswith("?")
        rest = rest[1:].strip() if nullable else rest
        rest = rest[1:].strip() if rest.startswith(":") else rest
        if name in properties:
            raise ValueError(f"the field {name!r} is named twice in {text.strip()!r}")
        schema = _type(rest or "str", field)
        if nullable and not isinstance(schema["type"], list):
            schema["type"] = [schema["type"], "null"]
        properties[name] = schema
    if not properties:
        raise ValueError(f"the schema names no field; {_COMPACT_HELP}")
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


# -- what is sent ------------------------------------------------------------------------------------


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def instructions(schema: Mapping[str, Any] | None) -> str:
    """What is appended to the prompt of a model that has no structured-output input."""
    if schema is None:
        return "Answer with JSON only: one JSON value, no text before or after it."
    return ("Answer with JSON only, no text before or after it, matching this JSON Schema:\n"
            f"```json\n{_compact_json(schema)}\n```")


def retry_messages(reply: str, reason: str) -> list[dict[str, str]]:
    """The follow-up that asks again: the invalid answer, then what was wrong with it."""
    return [{"role": "assistant", "content": reply},
            {"role": "user", "content": f"That answer is not valid: {reason}. Answer again, with the whole "
                                        "corrected JSON only."}]


# -- what --schema names -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerFormat:
    """A JSON answer asked for: ``schema`` None takes any JSON value.

    ``model_class`` is a pydantic model class: the answer is validated by it and ``read``
    returns its instance. ``name`` names the schema where a model's input wants a name.
    """

    schema: Mapping[str, Any] | None = None
    name: str = "answer"
    model_class: Any = None
    retries: int = RETRIES

    def read(self, text: str) -> Any:
        """The answer in ``text`` as a Python object; ``InvalidAnswer`` says which rule failed."""
        value = extract_json(text)
        if self.model_class is not None:
            return _pydantic_validate(self.model_class, value)
        if self.schema is not None:
            _validate(self.schema, value)
        return value

    @property
    def label(self) -> str:
        """How messages name it: "schema person", or "JSON" for any value."""
        return "JSON" if self.schema is None else f"schema {self.name}"


def _validator(schema: Mapping[str, Any]) -> Any:
    from jsonschema.validators import Draft202012Validator, validator_for

    return validator_for(schema, default=Draft202012Validator)(schema)


def _short(text: str) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= _MAX_REASON else one_line[: _MAX_REASON - 1] + "…"


def _validate(schema: Mapping[str, Any], value: Any) -> None:
    from jsonschema.exceptions import best_match

    try:
        error = best_match(_validator(schema).iter_errors(value))
    except Exception as problem:  # a $ref to nowhere (never fetched: no I/O here), a bad pattern
        raise InvalidAnswer(f"the schema cannot be checked: {_short(str(problem))}") from None
    if error is not None:
        raise InvalidAnswer(f"{error.json_path}: {_short(error.message)} (rule '{error.validator}')")


def _pydantic_validate(model_class: Any, value: Any) -> Any:
    try:
        return model_class.model_validate(value)
    except Exception as error:  # pydantic's ValidationError, recognised by its errors() method
        listed = getattr(error, "errors", None)
        errors = listed() if callable(listed) else None
        if not errors:
            raise InvalidAnswer(_short(str(error).splitlines()[0] if str(error) else type(error).__name__)) from None
        first = errors[0]
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidAnswer(f"{path}: {_short(first.get('msg', 'invalid'))}{more} "
                            f"(pydantic {model_class.__name__})") from None


def _is_pydantic_class(value: Any) -> bool:
    return isinstance(value, type) and any(
        klass.__module__.split(".")[0] == "pydantic" for klass in value.__mro__[1:])


def _is_pydantic_instance(value: Any) -> bool:
    return not isinstance(value, type) and _is_pydantic_class(type(value))


def check_schema(schema: Any) -> dict[str, Any]:
    """``schema`` as a JSON Schema dict that validators accept; ``ValueError`` in one line if not."""
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, Mapping):
        raise ValueError(f"a JSON Schema is a dict, not a {type(schema).__name__}")
    try:
        as_json = json.loads(json.dumps(schema, allow_nan=False))  # what is sent must be JSON
    except (TypeError, ValueError) as error:
        raise ValueError(f"not JSON: {_short(str(error))}") from None
    try:
        type(_validator(as_json)).check_schema(as_json)
    except SchemaError as error:
        raise ValueError(f"not a valid JSON Schema: {error.json_path}: {_short(error.message)}") from None
    return dict(as_json)


def answer_format(value: Any, name: str) -> AnswerFormat:
    """The format ``--schema NAME`` asks for, from the variable's ``value``.

    A dict is a JSON Schema (checked against its meta-schema); a pydantic model class gives
    its ``model_json_schema()`` and validates with ``model_validate``; a string is the compact
    form, or a JSON Schema written as JSON when it starts with ``{``. Anything else, or one
    that does not parse, raises ``ValueError`` in one line.
    """
    if _is_pydantic_class(value):
        if not callable(getattr(value, "model_json_schema", None)) or not callable(
                getattr(value, "model_validate", None)):
            raise ValueError(f"{value.__name__} is a pydantic 1 model; --schema takes pydantic 2 models "
                             "(model_json_schema, model_validate)")
        return AnswerFormat(check_schema(value.model_json_schema()), name, model_class=value)
    if _is_pydantic_instance(value):
        raise ValueError(f"an instance of the pydantic model {type(value).__name__}; name the class itself")
    if isinstance(value, Mapping):
        return AnswerFormat(check_schema(value), name)
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            try:
                schema = json.loads(value)
            except (ValueError, RecursionError) as error:
                raise ValueError(f"a string that starts with '{{' but is not JSON: {_short(str(error))}") from None
            return AnswerFormat(check_schema(schema), name)
        return AnswerFormat(parse_compact(value), name)
    raise ValueError(f"a {type(value).__name__}; --schema takes a JSON Schema dict, a pydantic model class or a "
                     "compact string such as 'name str, age int, tags list[str]'")
