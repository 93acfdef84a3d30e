"""The deterministic stand-in for a language model (pure: no I/O, no clock, no randomness).

The reply visibly depends on the model, the last user message, the turn number,
the system prompt and the sampling settings, so tests (and people trying a
notebook offline) can see that every option really reached the "model". A last
user message that asks for code or a fix (the words "code" or "fix") gets a reply
that ends in a fenced Python block, for ``-f code`` and ``%replicate fix``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["respond", "tokenize", "count_input_tokens", "conversation", "apply_limits", "code_block"]

# Words keep their leading whitespace (" world"), newlines are tokens of their own,
# punctuation and symbols are single tokens. Lossless: "".join(tokenize(t)) == t.
_TOKEN_RE = re.compile(r"\n|[^\S\n]*[\w'\u2019]+|[^\S\n]*[^\w\s]|[^\S\n]+")
_ROLE_RE = re.compile(r"^(System|User|Assistant|Developer|Tool):[ \t]?(.*)$")
_MAX_TOKEN_KEYS = ("max_tokens", "max_new_tokens", "max_completion_tokens", "max_output_tokens")

_ADJECTIVES = ("quiet", "curious", "bright", "patient", "steady", "gentle", "careful", "lively")
_NOUNS = ("river", "notebook", "lantern", "garden", "signal", "harbor", "compass", "kettle")
_VERBS = ("follows", "remembers", "answers", "gathers", "measures", "carries", "echoes", "sorts")
_ADVERBS = ("slowly", "again", "today", "together", "at dawn", "by design", "in order", "twice")
# A last user message that asks for code or a fix gets a reply ending in a fenced Python block.
_ASKS_FOR_CODE = re.compile(r"\b(?:code|fix)\b", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    """Split text into LLM-like tokens (lossless)."""
    return _TOKEN_RE.findall(text)


def _to_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return "" if content is None else str(content)


def _prompt_blocks(prompt: str) -> list[tuple[str, str]]:
    """Split a gpt4free-style "Role: text" prompt into (role, text) blocks."""
    blocks: list[tuple[str, str]] = []
    for line in prompt.split("\n"):
        match = _ROLE_RE.match(line)
        if match:
            blocks.append((match.group(1), match.group(2)))
        elif blocks:  # continuation of a multi-line message
            role, text = blocks[-1]
            blocks[-1] = (role, f"{text}\n{line}")
    return blocks


def conversation(input: dict[str, Any]) -> tuple[int, str, str | None]:
    """(user turn number, last user message, system prompt or None) of an input."""
    messages = input.get("messages")
    if isinstance(messages, list) and messages:
        msgs = [m for m in messages if isinstance(m, dict)]
        users = [_to_text(m.get("content")) for m in msgs if m.get("role") == "user"]
        systems = [
            _to_text(m.get("content")) for m in msgs if m.get("role") in ("system", "developer")
        ]
        return max(len(users), 1), (users[-1] if users else ""), ("\n".join(systems) or None)
    prompt = input.get("prompt")
    prompt = prompt if isinstance(prompt, str) else ""
    system = input.get("system_prompt") if isinstance(input.get("system_prompt"), str) else None
    blocks = _prompt_blocks(prompt)
    if not blocks:
        return 1, prompt, system or None
    users = [text for role, text in blocks if role == "User"]
    if not system:
        system = "\n".join(text for role, text in blocks if role in ("System", "Developer"))
    return max(len(users), 1), (users[-1] if users else ""), system or None


def count_input_tokens(input: dict[str, Any]) -> int:
    """Rough prompt size for the metrics (counts the same tokens as the output)."""
    parts = [_to_text(input.get("prompt")), _to_text(input.get("system_prompt"))]
    messages = input.get("messages")
    if isinstance(messages, list):
        parts += [_to_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(len(tokenize(p)) for p in parts)


class _Picker:
    """Deterministic choices from a seed (sha256 counter mode: stable across Pythons)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def number(self, below: int) -> int:
        self._counter += 1
        digest = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        return int.from_bytes(digest[:8], "big") % below

    def pick(self, words: tuple[str, ...]) -> str:
        return words[self.number(len(words))]


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _sentence(p: _Picker, first: bool) -> str:
    if first:  # always one em dash, so clients meet multi-byte UTF-8
        return (
            f" The {p.pick(_NOUNS)} — {p.pick(_ADJECTIVES)} as ever — "
            f"{p.pick(_VERBS)} the {p.pick(_NOUNS)} {p.pick(_ADVERBS)}."
        )
    return (
        f" A {p.pick(_ADJECTIVES)} {p.pick(_NOUNS)} {p.pick(_VERBS)} "
        f"the {p.pick(_ADJECTIVES)} {p.pick(_NOUNS)} {p.pick(_ADVERBS)}."
    )


def _limit(text: str, input: dict[str, Any], props: dict[str, Any]) -> str:
    """Apply the model's stop sequences and max-tokens input, as the real model would."""
    if "stop_sequences" in props:
        stops = input.get("stop_sequences", props["stop_sequences"].get("default"))
        if isinstance(stops, str):
            cuts = [text.find(s) for s in stops.split(",") if s]
            cuts = [c for c in cuts if c >= 0]
            if cuts:
                text = text[: min(cuts)]
    for key in _MAX_TOKEN_KEYS:
        if key in props:
            limit = input.get(key, props[key].get("default"))
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit >= 0:
                text = "".join(tokenize(text)[: int(limit)])
            break
    return text


def apply_limits(text: str, input: dict[str, Any], schema_properties: dict[str, Any]) -> str:
    """`text` cut by the input's stop sequences and max tokens, as the model would cut it."""
    return _limit(text, input, schema_properties)


def respond(model: str, input: dict[str, Any], schema_properties: dict[str, Any]) -> str:
    """The reply of `model` to `input` (raises ValueError when the model would fail)."""
    if "messages" in schema_properties and not input.get("messages") and not input.get("prompt"):
        raise ValueError("Either prompt or messages must be provided")  # as gpt-4o models do
    turn, last_user, system = conversation(input)
    header = f"This is {model} (emulated), turn {turn}. You said: “{_short(last_user)}”."
    if system:
        header += f" System prompt: “{_short(system)}”."
    temperature = input.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        header += f" Temperature: {temperature:g}."
    seed = json.dumps({"model": model, "input": input}, sort_keys=True, default=str)
    picker = _Picker(hashlib.sha256(seed.encode()).digest())
    target = 80 + picker.number(50)
    text = header + "\n\n" + _sentence(picker, True).lstrip()
    while len(tokenize(text)) < target:
        text += _sentence(picker, False)
    if _ASKS_FOR_CODE.search(last_user):
        text += "\n\n" + code_block(model, input)
    return _limit(text, input, schema_properties)


def code_block(model: str, input: dict[str, Any]) -> str:
    """The fenced Python block that ends a reply to a prompt asking for code or a fix
    (deterministic: the same model and input give the same code)."""
    seed = json.dumps({"code": model, "input": input}, sort_keys=True, default=str)
    picker = _Picker(hashlib.sha256(seed.encode()).digest())
    name, value = picker.pick(_NOUNS), picker.pick(_ADJECTIVES)
    return (f"```python\n# {model} (emulated) suggests:\n"
            f"def {name}(value={value!r}):\n    return f\"the {{value}} {name}\"\n\n\nprint({name}())\n```\n")
