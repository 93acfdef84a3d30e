"""Map generic generation settings onto the input keys a model declares. Pure.

Replicate's text models disagree on names: the length limit is ``max_tokens``,
``max_new_tokens``, ``max_completion_tokens`` or ``max_output_tokens``; some take
``messages``, most take a ``prompt``; the system prompt may be ``system_prompt``,
``system_instruction`` or only part of the prompt. So inputs follow the model's own
``openapi_schema`` (``components.schemas.Input.properties``). gpt4free's mapping
(corrected) is used only where no schema can exist: a bare version id names no model to ask,
and a model may declare no Input. Then the keys are guesses, and ``guess_note`` says so; a
schema that merely failed to arrive is never replaced by guesses (``client.model_schema``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .attachments import as_references, put_images
from .errors import InvalidRequestError
from .prompts import format_prompt, normalize, split_system
from .structured import AnswerFormat, instructions

MAX_TOKEN_KEYS = ("max_tokens", "max_new_tokens", "max_completion_tokens", "max_output_tokens")
SYSTEM_KEYS = ("system_prompt", "system_instruction")
# Inputs that take a JSON Schema for the answer (-f json --schema), in the order they are preferred.
# A grammar (GBNF) input is not one of them: the schema then goes into the prompt as instructions.
STRUCTURED_KEYS = ("json_schema", "response_format", "jsonschema", "schema")
# The keys gpt4free's mapping sends, in the order a note names them.
GUESSED_KEYS = ("prompt", "system_prompt", "max_new_tokens", "temperature", "top_p", "top_k", "stop_sequences")
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_SLUG_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEPLOYMENT_PREFIX = "deployments/"  # -m deployments/owner/name runs a deployment


@dataclass(frozen=True)
class ModelRef:
    """``owner/name`` (an official model), ``owner/name:version``, a bare version id, or
    ``deployments/owner/name`` (``deployment``: ``owner/name`` names a deployment, which runs
    whatever version its current release holds, so it has no version of its own)."""

    owner: str | None
    name: str | None
    version: str | None = None
    deployment: bool = False

    @property
    def slug(self) -> str | None:
        """``owner/name`` of the model, or of the deployment."""
        return f"{self.owner}/{self.name}" if self.owner and self.name else None

    def __str__(self) -> str:
        if self.deployment:
            return f"{DEPLOYMENT_PREFIX}{self.slug}"
        if self.slug and self.version:
            return f"{self.slug}:{self.version}"
        return self.slug or self.version or ""


def parse_model(model: str) -> ModelRef:
    """Parse a model reference; raises InvalidRequestError naming the bad value."""
    text = model.strip()
    if text.startswith(DEPLOYMENT_PREFIX):
        return _parse_deployment(model, text.removeprefix(DEPLOYMENT_PREFIX))
    if _VERSION_ID.match(text):
        return ModelRef(None, None, text)
    slug, colon, version = text.partition(":")
    owner, _, name = slug.partition("/")
    if _SLUG_PART.match(owner) and _SLUG_PART.match(name) and (not colon or _SLUG_PART.match(version)):
        return ModelRef(owner, name, version or None)
    raise InvalidRequestError(
        f"Model {model!r} is not 'owner/name', 'owner/name:version', 'deployments/owner/name' "
        "or a 64-character version id"
    )


def _parse_deployment(model: str, rest: str) -> ModelRef:
    owner, _, name = rest.partition("/")
    # No ":version" (the slug part refuses it): a deployment runs its current release's version.
    if _SLUG_PART.match(owner) and _SLUG_PART.match(name):
        return ModelRef(owner, name, deployment=True)
    raise InvalidRequestError(f"Deployment {model!r} is not 'deployments/owner/name'")


@dataclass(frozen=True)
class Settings:
    """Generic generation settings, as the caller gave them (None = not given)."""

    system_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Model inputs as given for this request (``-i``): sent last, over everything."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Model inputs from configuration (``default_inputs``): sent first, so any setting of the
    request itself (``-t 0.9`` over a configured temperature) wins."""
    images: tuple[Any, ...] = ()
    """``--image`` files (``attachments.Attachment`` once loaded), for the model's image input."""
    answer: AnswerFormat | None = None
    """A JSON answer asked for (``-f json``, ``--schema``): its schema goes into the model's
    structured-output input (``structured_input``), else into the prompt as instructions."""
    unsaid: frozenset[str] = frozenset()
    """Settings sent where the model takes them and left out without a note where it does not:
    the panel's sliders, which always hold a value (an image model takes no temperature)."""


def stop_sequences(stop: Any) -> tuple[str, ...]:
    """A string is one stop sequence (gpt4free split it into characters); drop empties."""
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else list(stop)
    return tuple(str(item) for item in items if item not in (None, ""))


def input_properties(openapi_schema: Any) -> dict[str, Any] | None:
    """``components.schemas.Input.properties`` of a Cog schema, or None when absent."""
    try:
        props = openapi_schema["components"]["schemas"]["Input"]["properties"]
    except (TypeError, KeyError):
        return None
    return props if isinstance(props, dict) else None


def build_input(
    messages: list[Mapping[str, Any]],
    settings: Settings,
    properties: Mapping[str, Any] | None,
    *,
    model: str = "this model",
) -> tuple[dict[str, Any], list[str]]:
    """The ``input`` for a prediction, and the names of settings the model does not take.

    ``properties`` None means no schema exists (see the module's note): gpt4free's keys.
    Files (``attachments.Attachment``) appear as their short references; ``model`` names the
    model in the error for images it has no input for.
    """
    plain = normalize(messages)
    carried = structured_input(properties, settings.answer)
    if settings.answer is not None and carried is None and plain and plain[-1]["content"].strip():
        # No input of the model takes the schema: the prompt says it.
        plain[-1] = {**plain[-1], "content": f"{plain[-1]['content']}\n\n{instructions(settings.answer.schema)}"}
    own_system, rest = split_system(plain)
    if not any(m["content"].strip() for m in rest):
        raise InvalidRequestError("messages must contain at least one non-empty user message")
    system = _join(settings.system_prompt, own_system)
    if properties is None:
        put_images({}, settings.images, None, model)  # raises for any image: no schema says where
        return as_references(_fallback_input(plain, rest, system, settings), None)[0], []

    result: dict[str, Any] = dict(settings.defaults)
    ignored: list[str] = []
    system_key = next((k for k in SYSTEM_KEYS if k in properties), None)
    if "messages" in properties:
        # Such models (OpenAI's) ignore prompt and system_prompt when messages are given.
        head = [{"role": "system", "content": system}] if system else []
        result["messages"] = head + rest
    elif system_key and system:
        result[system_key] = system
        result["prompt"] = format_prompt(rest)
    else:
        head = [{"role": "system", "content": system}] if system else []
        result["prompt"] = format_prompt(head + rest)

    length_key = next((k for k in MAX_TOKEN_KEYS if k in properties), None)
    _put(result, ignored, length_key, settings.max_tokens, "max_tokens")
    for key in ("temperature", "top_p"):
        _put(result, ignored, key if key in properties else None, getattr(settings, key), key)
    top_k = None if settings.top_k is None else int(settings.top_k)
    _put(result, ignored, "top_k" if "top_k" in properties else None, top_k, "top_k")
    if settings.stop:
        _put_stop(result, ignored, settings.stop, properties)
    put_images(result, settings.images, properties, model)
    if carried is not None:
        result[carried[0]] = carried[1]
    result.update(settings.extra)
    result, not_declared = as_references(result, properties)
    return result, [name for name in ignored if name not in settings.unsaid] + not_declared


def structured_input(properties: Mapping[str, Any] | None, answer: AnswerFormat | None) -> tuple[str, Any] | None:
    """(key, value) that carries the answer's JSON Schema in the model's own input, or None
    when it declares none that can (then the schema goes into the prompt).

    The value follows the key and the declared type: a string input gets the schema as JSON
    text; ``json_schema`` as an object gets the wrapper of OpenAI's Responses API, as
    openai/gpt-5-structured takes it (``{"format": {"type": "json_schema", "name", "schema"}}``);
    ``response_format`` the one of its Chat Completions (``{"type": "json_schema",
    "json_schema": {"name", "schema"}}``); any other the schema itself. An input with fixed
    choices (an enum: "text" or "json_object") cannot carry a schema, and is left alone.
    """
    if answer is None or answer.schema is None or properties is None:
        return None
    for key in STRUCTURED_KEYS:
        spec = properties.get(key)
        if not isinstance(spec, Mapping) or "enum" in spec or "allOf" in spec:
            continue
        schema = dict(answer.schema)
        if spec.get("type") == "string":
            return key, json.dumps(schema, ensure_ascii=False)
        if key == "json_schema":
            return key, {"format": {"type": "json_schema", "name": answer.name, "schema": schema}}
        if key == "response_format":
            return key, {"type": "json_schema", "json_schema": {"name": answer.name, "schema": schema}}
        return key, schema
    return None


def _fallback_input(
    plain: list[dict[str, str]], rest: list[dict[str, str]], system: str | None, settings: Settings
) -> dict[str, Any]:
    """gpt4free's mapping, minus its bugs: the system prompt is sent once, stop is a list."""
    result: dict[str, Any] = dict(settings.defaults)
    if settings.system_prompt is not None:
        result["prompt"] = format_prompt(rest)
        result["system_prompt"] = system
    else:
        result["prompt"] = format_prompt(plain)
    for key, value in (
        ("max_new_tokens", settings.max_tokens),
        ("temperature", settings.temperature),
        ("top_p", settings.top_p),
        ("top_k", None if settings.top_k is None else int(settings.top_k)),
    ):
        if value is not None:
            result[key] = value
    if settings.stop:
        result["stop_sequences"] = _comma_joined(settings.stop)
    result.update(settings.extra)
    return result


def guess_note(inputs: Mapping[str, Any], why: str) -> str:
    """The note for the line under the reply when ``inputs`` came from the fallback mapping."""
    keys = [key for key in GUESSED_KEYS if key in inputs]
    return f"{why}: input keys guessed ({', '.join(keys)})"


def _put(result: dict[str, Any], ignored: list[str], key: str | None, value: Any, name: str) -> None:
    if value is None:
        return
    if key is None:
        ignored.append(name)
    else:
        result[key] = value


def _put_stop(
    result: dict[str, Any], ignored: list[str], stop: tuple[str, ...], properties: Mapping[str, Any]
) -> None:
    for key in ("stop_sequences", "stop"):
        if key in properties:
            is_array = properties[key].get("type") == "array" if isinstance(properties[key], Mapping) else False
            result[key] = list(stop) if is_array else _comma_joined(stop)
            return
    ignored.append("stop")


def _comma_joined(stop: tuple[str, ...]) -> str:
    # Replicate's stop_sequences is one comma-separated string: a comma cannot be expressed.
    bad = [s for s in stop if "," in s]
    if bad:
        raise InvalidRequestError(
            f"Stop sequence {bad[0]!r} contains a comma, which this model's comma-separated "
            "stop_sequences input cannot express"
        )
    return ",".join(stop)


def _join(*parts: str | None) -> str | None:
    seen: list[str] = []
    for part in parts:
        if part and part.strip() and part not in seen:
            seen.append(part)
    return "\n".join(seen) if seen else None


# Settings whose 0 means "as deterministic as the model allows": below a declared minimum they
# are raised to it (llama-2-70b-chat takes temperature >= 0.01; a user who types 0 means that).
_AS_LOW_AS_POSSIBLE = ("temperature",)


def fit_to_schema(inputs: Mapping[str, Any], properties: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``inputs`` checked against the bounds the model's schema declares, before anything is sent.

    Returns the inputs to send and notes for the user ("temperature 0 raised to 0.01, the
    lowest this model takes"). A value outside the declared range, or a fraction where the
    schema wants an integer, raises ``InvalidRequestError`` naming the allowed range.
    """
    fitted = dict(inputs)
    notes: list[str] = []
    for key, value in inputs.items():
        spec = properties.get(key)
        if not isinstance(spec, Mapping) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if spec.get("type") == "integer" and not float(value).is_integer():
            raise InvalidRequestError(f"{key}={value!r}: this model takes a whole number")
        low, high = _bound(spec, "minimum"), _bound(spec, "maximum")
        if low is not None and value < low and key in _AS_LOW_AS_POSSIBLE and value == 0:
            fitted[key] = low
            notes.append(f"{key} 0 raised to {low:g}, the lowest this model takes")
        elif (low is not None and value < low) or (high is not None and value > high):
            raise InvalidRequestError(f"{key}={value!r} is outside what this model takes ({_range(low, high)})")
    return fitted, notes


def _bound(spec: Mapping[str, Any], name: str) -> float | None:
    value = spec.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"
