"""The emulated models' JSON mode: deterministic JSON that follows the JSON Schema it was sent. Pure.

A model answers in JSON when asked in either of the two ways real ones are:

- its own structured-output input: ``json_schema`` (openai/gpt-5-structured), which must be
  wrapped as ``{"format": {"type": "json_schema", "name": ..., "schema": {...}}}``; the
  real model rejects a bare schema, and so does this one (the prediction fails). The reply
  is the bare JSON.
- the prompt: its last user message says "JSON Schema" and a JSON object follows (fenced or
  not), or it asks for "JSON only". The reply is that JSON in a fenced ```json block, after a
  line of chatter, as chat models tend to answer.

The value follows the schema: types (the first that is not null), ``enum`` and ``const``,
required and optional properties (all are given), arrays within ``minItems``/``maxItems``,
numbers within their bounds, string lengths and a few formats, local ``$ref`` (pydantic's
``$defs``), ``anyOf``/``oneOf`` (the first choice) and ``allOf`` (merged). Words and numbers
are chosen from a hash of the model and the input, so the same request gets the same answer.

``broken`` makes the answer invalid, for the retries of clients: ``"schema"`` drops the
first required property (or breaks the syntax when nothing is required), ``"syntax"`` cuts
the JSON short.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .responder import conversation

__all__ = ["JsonAsk", "json_ask", "json_reply"]

_WORDS = ("river", "lantern", "garden", "signal", "harbor", "compass", "kettle", "meadow", "quiet", "bright")
_ASKS_FOR_SCHEMA = re.compile(r"json\s+schema", re.IGNORECASE)
_ASKS_FOR_JSON = re.compile(r"\bjson\s+only\b", re.IGNORECASE)
_MAX_DEPTH = 12  # a recursive $ref ends here (with null)
_WRAPPER = '{"format": {"type": "json_schema", "name": "...", "schema": {...}}}'


@dataclass(frozen=True)
class JsonAsk:
    schema: dict[str, Any] | bool | None  # None: any JSON
    fenced: bool  # asked in the prompt: the reply is chattier


def json_ask(input: dict[str, Any], properties: dict[str, Any]) -> JsonAsk | None:
    """How this input asks for JSON, or None; ``ValueError`` (the prediction fails) for a
    ``json_schema`` the real model would reject."""
    given = input.get("json_schema")
    if "json_schema" in properties and given:
        fmt = given.get("format") if isinstance(given, dict) else None
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(
                fmt.get("schema"), dict):
            raise ValueError(f"Invalid json_schema: wrap the schema as {_WRAPPER}")
        return JsonAsk(fmt["schema"], fenced=False)
    text = conversation(input)[1]
    asked = _ASKS_FOR_SCHEMA.search(text)
    if asked:
        schema = _first_object(text, asked.end())
        if schema is not None:
            return JsonAsk(schema, fenced=True)
    if asked or _ASKS_FOR_JSON.search(text):
        return JsonAsk(None, fenced=True)
    return None


def _first_object(text: str, start: int) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    position = text.find("{", start)
    while position >= 0:
        try:
            value, _ = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        return value if isinstance(value, dict) else None
    return None


class _Picker:
    def __init__(self, seed: str) -> None:
        self._seed = hashlib.sha256(seed.encode()).digest()
        self._counter = 0

    def number(self, below: int) -> int:
        self._counter += 1
        digest = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        return int.from_bytes(digest[:8], "big") % max(below, 1)

    def word(self) -> str:
        return _WORDS[self.number(len(_WORDS))]


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}  # a remote schema: never fetched
    node = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _merged(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema.get("allOf", []):
        if isinstance(part, dict):
            part = _resolve(part["$ref"], root) if "$ref" in part else part
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**value, **merged.get("properties", {})}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged.setdefault(key, value)
    return merged


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _string(schema: dict[str, Any], pick: _Picker) -> str:
    formats = {"date": "2024-05-01", "date-time": "2024-05-01T12:00:00Z", "time": "12:00:00",
               "email": f"{pick.word()}@example.com", "uri": f"https://example.com/{pick.word()}",
               "uuid": "00000000-0000-4000-8000-000000000000"}
    text = formats.get(str(schema.get("format")), f"{pick.word()} {pick.word()}")
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text + " ") * (low // (len(text) + 1) + 1)
        text = text[:low]
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number(schema: dict[str, Any], pick: _Picker, integer: bool) -> int | float:
    def bound(key: str) -> float | None:
        value = schema.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    step = 1.0 if integer else 0.5
    low, high = bound("minimum"), bound("maximum")
    above, below = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    if above is not None:
        low = max(low, above + step) if low is not None else above + step
    if below is not None:
        high = min(high, below - step) if high is not None else below - step
    if integer:
        low = None if low is None else float(math.ceil(low))
        high = None if high is None else float(math.floor(high))
    if low is not None and high is not None:
        value = low + pick.number(int(high - low) + 1) if high >= low else low
    elif low is not None:
        value = low + pick.number(100)
    elif high is not None:
        value = high - pick.number(100)
    else:
        value = float(pick.number(100))
    if integer:
        return int(value)
    return value + 0.5 if high is None or value + 0.5 <= high else value


def _value(schema: Any, root: Any, pick: _Picker, depth: int = 0) -> Any:
    if schema is True or schema is None or schema == {}:
        return f"{pick.word()} {pick.word()}"
    if schema is False or depth > _MAX_DEPTH or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target = _resolve(str(schema["$ref"]), root)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _value({**target, **rest} if isinstance(target, dict) else target, root, pick, depth + 1)
    if "allOf" in schema:
        return _value(_merged(schema, root), root, pick, depth + 1)
    for key in ("anyOf", "oneOf"):
        choices = [c for c in schema.get(key, []) if not (isinstance(c, dict) and c.get("type") == "null")]
        if choices:
            rest = {k: v for k, v in schema.items() if k != key}
            choice = choices[0]
            return _value({**rest, **choice} if isinstance(choice, dict) else choice, root, pick, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][pick.number(len(schema["enum"]))]
    kind = _kind(schema)
    if kind == "object":
        properties = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        value = {name: _value(sub, root, pick, depth + 1) for name, sub in properties.items()}
        for name in schema.get("required", []):  # required but not described: any value
            value.setdefault(name, f"{pick.word()} {pick.word()}")
        return value
    if kind == "array":
        prefix: list[Any] = schema["prefixItems"] if isinstance(schema.get("prefixItems"), list) else []
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        count = max(len(prefix), low if isinstance(low, int) else 0, 2)
        count = min(count, high) if isinstance(high, int) else count
        items = [_value(prefix[i] if i < len(prefix) else schema.get("items", {}), root, pick, depth + 1)
                 for i in range(count)]
        if schema.get("uniqueItems"):
            items = [f"{item} {i}" if isinstance(item, str) else item for i, item in enumerate(items)]
        return items
    if kind == "integer":
        return _number(schema, pick, integer=True)
    if kind == "number":
        return _number(schema, pick, integer=False)
    if kind == "boolean":
        return pick.number(2) == 1
    if kind == "null":
        return None
    return _string(schema, pick)


def json_reply(model: str, input: dict[str, Any], ask: JsonAsk, broken: str | None = None) -> str:
    """The JSON answer of ``model`` to ``input`` (``broken``: "schema" or "syntax" makes it invalid)."""
    pick = _Picker(json.dumps({"model": model, "input": input}, sort_keys=True, default=str))
    schema = ask.schema if ask.schema is not None else {
        "type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number",
                                                                                    "maximum": 1, "minimum": 0}}}
    value = _value(schema, schema, pick)
    syntax = broken == "syntax"
    if broken == "schema":
        required = schema.get("required") if isinstance(schema, dict) else None
        if isinstance(value, dict) and isinstance(required, list) and required and required[0] in value:
            del value[required[0]]
        else:
            syntax = True
    text = json.dumps(value, ensure_ascii=False, indent=2)
    if syntax:
        text = text[: max(1, len(text) // 2)]
    if not ask.fenced:
        return text
    return f"Here is the JSON you asked for:\n\n```json\n{text}\n```" if not syntax else (
        f"Here is the JSON you asked for:\n\n```json\n{text}")
