"""Request-body and input validation, producing Replicate's 422 "invalid_fields" entries."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidField", "validate_body", "validate_input", "parse_cancel_after"]

# The create-prediction body schemas of Replicate's OpenAPI document (prediction_request,
# version_prediction_request; both additionalProperties: false). webhook_completed is the
# older spelling of webhook that earlier clients send.
_WEBHOOK_EVENTS = ["start", "output", "logs", "completed"]
_BODY_PROPERTIES: dict[str, dict[str, Any]] = {
    "input": {"type": "object"},
    "stream": {"type": "boolean"},
    "webhook": {"type": "string"},
    "webhook_completed": {"type": "string"},
    "webhook_events_filter": {"type": "array", "items": {"type": "string", "enum": _WEBHOOK_EVENTS}},
}
_MODEL_BODY: dict[str, Any] = {"required": ["input"], "properties": _BODY_PROPERTIES}
_VERSION_BODY: dict[str, Any] = {
    "required": ["version", "input"],
    "properties": {"version": {"type": "string"}, **_BODY_PROPERTIES},
}
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


def _number(value: float) -> str:
    """A bound as real answers print it: "Must be less than or equal to 4", not 4.0."""
    return f"{value:.10g}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _check(prefix: str, name: str, value: Any, prop: dict[str, Any]) -> list[InvalidField]:
    """Errors of one value. `name` is its path inside the object being validated (the enum
    message names that, not the full path: real 422s say "output_format must be one of
    the following" for field input.output_format); the reported field is prefix + name."""
    field = _join(prefix, name)
    expected = prop.get("type")
    if expected and not _matches(value, expected):
        return [InvalidField(
            "invalid_type", field,
            f"Invalid type. Expected: {expected}, given: {_type_name(value)}",
        )]
    errors = []
    if "enum" in prop and value not in prop["enum"]:
        allowed = ", ".join(json.dumps(v) for v in prop["enum"])
        errors.append(InvalidField("enum", field, f"{name} must be one of the following: {allowed}"))
    if _type_name(value) in ("integer", "number"):
        # Type names as a real 422 reports them ("number_lte" for input.num_inference_steps).
        if "minimum" in prop and value < prop["minimum"]:
            errors.append(InvalidField(
                "number_gte", field, f"Must be greater than or equal to {_number(prop['minimum'])}"
            ))
        if "maximum" in prop and value > prop["maximum"]:
            errors.append(InvalidField(
                "number_lte", field, f"Must be less than or equal to {_number(prop['maximum'])}"
            ))
    if expected == "array" and "items" in prop:
        for i, item in enumerate(value):
            errors += _check(prefix, _join(name, str(i)), item, prop["items"])
    return errors


def _resolve(prop: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A property with its ``allOf: [{"$ref": "#/components/schemas/x"}]`` merged in (Cog's enums)."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for ref in prop.get("allOf", []):
        target = components.get(str(ref.get("$ref", "")).rpartition("/")[2], {})
        merged = {**target, **merged}
    return merged


def validate_input(input: dict[str, Any], schema: dict[str, Any],
                   components: dict[str, Any] | None = None) -> list[InvalidField]:
    """Check an input object against a Cog Input schema (`components` resolves its ``allOf``
    references). Unknown keys are ignored, as Cog does."""
    errors = [
        InvalidField("required", "input", f"{name} is required")
        for name in schema.get("required", [])
        if name not in input
    ]
    for name, prop in schema.get("properties", {}).items():
        if name in input:
            errors += _check("input", name, input[name], _resolve(prop, components or {}))
    return errors


def validate_body(body: Any, version_required: bool = False) -> list[InvalidField]:
    """Check the top level of a create-prediction body against the API's own schema.

    As real 422s show (replicate.com changelog 2024-05-01; real bodies quoted in public
    repositories): top-level errors have the field "", missing keys come first, then the
    keys the schema does not allow (additionalProperties: false).
    """
    if not isinstance(body, dict):
        return [InvalidField("invalid_type", "", "Invalid type. Expected: object, given: "
                             + _type_name(body))]
    schema = _VERSION_BODY if version_required else _MODEL_BODY
    errors = [
        InvalidField("required", "", f"{name} is required")
        for name in schema["required"]
        if name not in body
    ]
    errors += [
        InvalidField("additional_property_not_allowed", "", f"Additional property {key} is not allowed")
        for key in body
        if key not in schema["properties"]
    ]
    for name, prop in schema["properties"].items():
        if name in body:
            errors += _check("", name, body[name], prop)
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
