"""Request-body and input validation, producing Replicate's 422 "invalid_fields" entries."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidField", "validate_body", "validate_input", "parse_cancel_after"]

_BODY_KEYS = {"input", "stream", "webhook", "webhook_events_filter", "webhook_completed"}
_WEBHOOK_EVENTS = {"start", "output", "logs", "completed"}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"  # ASCII digits only: \d would take any script's digits
_SECONDS_RE = re.compile(_NUMBER)
_DURATION_RE = re.compile(rf"(?:({_NUMBER})h)?(?:({_NUMBER})m)?(?:({_NUMBER})s)?")


@dataclass(frozen=True)
class InvalidField:
    type: str
    field: str
    description: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches(value: Any, expected: str) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":  # JSON has one number type: 3.0 is an integer
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


def _check(field: str, value: Any, prop: dict[str, Any]) -> list[InvalidField]:
    expected = prop.get("type")
    if expected and not _matches(value, expected):
        return [InvalidField(
            "invalid_type", field,
            f"Invalid type. Expected: {expected}, given: {_type_name(value)}",
        )]
    errors = []
    if "enum" in prop and value not in prop["enum"]:
        allowed = ", ".join(json.dumps(v) for v in prop["enum"])
        errors.append(InvalidField("enum", field, f"{field} must be one of the following: {allowed}"))
    if _type_name(value) in ("integer", "number"):
        if "minimum" in prop and value < prop["minimum"]:
            errors.append(InvalidField(
                "greater_equal", field, f"Must be greater than or equal to {prop['minimum']}"
            ))
        if "maximum" in prop and value > prop["maximum"]:
            errors.append(InvalidField(
                "less_equal", field, f"Must be less than or equal to {prop['maximum']}"
            ))
    if expected == "array" and "items" in prop:
        for i, item in enumerate(value):
            errors += _check(f"{field}.{i}", item, prop["items"])
    return errors


def validate_input(input: dict[str, Any], schema: dict[str, Any]) -> list[InvalidField]:
    """Check an input object against a Cog Input schema. Unknown keys are ignored, as Cog does."""
    errors = [
        InvalidField("required", "input", f"{name} is required")
        for name in schema.get("required", [])
        if name not in input
    ]
    for name, prop in schema.get("properties", {}).items():
        if name in input:
            errors += _check(f"input.{name}", input[name], prop)
    return errors


def validate_body(body: Any, allowed_extra: frozenset[str] = frozenset()) -> list[InvalidField]:
    """Check the top level of a create-prediction body (the API rejects extra properties)."""
    if not isinstance(body, dict):
        return [InvalidField("invalid_type", "(root)", "Invalid type. Expected: object, given: "
                             + _type_name(body))]
    errors = [
        InvalidField("additional_property_not_allowed", "(root)",
                     f"Additional property {key} is not allowed")
        for key in body
        if key not in _BODY_KEYS | allowed_extra
    ]
    if "input" not in body:
        errors.append(InvalidField("required", "(root)", "input is required"))
    elif not isinstance(body["input"], dict):
        errors.append(InvalidField("invalid_type", "input",
                                   f"Invalid type. Expected: object, given: {_type_name(body['input'])}"))
    if "stream" in body and not isinstance(body["stream"], bool):
        errors.append(InvalidField("invalid_type", "stream",
                                   f"Invalid type. Expected: boolean, given: {_type_name(body['stream'])}"))
    events = body.get("webhook_events_filter")
    if events is not None and (
        not isinstance(events, list) or any(e not in _WEBHOOK_EVENTS for e in events)
    ):
        errors.append(InvalidField("enum", "webhook_events_filter",
                                   "webhook_events_filter must be a list of: start, output, logs, completed"))
    return errors


def parse_cancel_after(value: str) -> float | None:
    """Seconds from a ``Cancel-After`` header (``30s``, ``5m``, ``1h30m``, bare seconds).

    None for anything else. Only plain decimal digits are read, so Python's other float
    spellings (``nan``, ``inf``, ``-5``, ``1e3``, ``1_0``) are refused, not computed with.
    """
    value = value.strip()
    if _SECONDS_RE.fullmatch(value):
        seconds = float(value)
    else:
        match = _DURATION_RE.fullmatch(value)
        if not value or not match:
            return None
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    return seconds if math.isfinite(seconds) else None  # 400 digits overflow to inf
