"""Per-prompt faults: a marker in one prompt makes that one prediction misbehave.

A batch of 100 prompts can have item 37 fail while the others stream. Markers are read from the
last user message only: the ``prompt`` string (its last ``User:`` block when it holds a
transcript) or the last ``user`` entry of ``messages``, so one in an earlier turn, or echoed in
an earlier reply, does not fire again. The marker stays in the text the model sees.

``[[emulator:fail]]`` / ``[[emulator:fail=N]]``
    the prediction fails after N output tokens (default 3; image and audio models: steps), with
    an error like ``Faults.error_after``: status ``failed``, ``error`` set, an SSE ``error`` event.
``[[emulator:fail-create]]``
    the create answers 422 with Replicate's "Input validation failed" body; nothing is created.
``[[emulator:5xx-once]]``
    the create answers 500 the first time this text is sent (nothing is created), then works.
``[[emulator:stall]]`` / ``[[emulator:stall=N]]``
    streams N tokens (default 3), then stays silent until canceled (or Cancel-After).
``[[emulator:slow=SECONDS]]``
    its tokens (steps) take about SECONDS in total.
``[[emulator:bad-json]]`` / ``[[emulator:bad-json=syntax]]``
    a JSON answer (json_mode.py) to this message is invalid: it lacks its first required
    property (or, by default with nothing required, and with ``=syntax``, it is cut short). Only
    the message holding the marker gets it, so a client's follow-up that asks again is answered
    with valid JSON.

An unknown marker, or a bad value, gets a 422 naming it, so a typo cannot pass unnoticed.
Markers act on top of the faults injected for the next prediction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .responder import conversation
from .validation import InvalidField

__all__ = ["Markers", "read_markers", "tokens_per_second", "MARKER_NAMES"]

_MARKER = re.compile(r"\[\[emulator:([^\]=]*)(?:=([^\]]*))?\]\]")
_DEFAULT_AFTER = 3  # tokens streamed before `fail` / `stall` act
_MAX_SLOW = 3600.0
MARKER_NAMES = ("fail", "fail-create", "5xx-once", "stall", "slow", "bad-json")
_BAD_JSON = ("schema", "syntax")


@dataclass(frozen=True)
class Markers:
    field: str = "input.prompt"  # where they were found, for 422 answers
    text: str = ""  # the message holding them (5xx-once remembers it)
    fail_after: int | None = None
    fail_create: bool = False
    error_once: bool = False
    stall_after: int | None = None
    slow: float | None = None  # seconds for all the tokens
    bad_json: str | None = None  # "schema" or "syntax": how a JSON answer is broken

    @property
    def any(self) -> bool:
        return self != Markers(self.field, self.text)


def _message(input: dict[str, Any]) -> tuple[str, str]:
    """(field, text) of the last user message."""
    messages = input.get("messages")
    field = "input.messages" if isinstance(messages, list) and messages else "input.prompt"
    return field, conversation(input)[1]


def _count(name: str, value: str | None) -> int:
    if value is None:
        return _DEFAULT_AFTER
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise ValueError(f"[[emulator:{name}=N]] needs a whole number of tokens, not {value!r}")
    return int(value)


def _seconds(value: str | None) -> float:
    if value is None or not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value) or float(value) > _MAX_SLOW:
        raise ValueError(f"[[emulator:slow=SECONDS]] needs seconds from 0 to {_MAX_SLOW:g}, not {value!r}")
    return float(value)


def read_markers(input: dict[str, Any]) -> tuple[Markers, list[InvalidField]]:
    """The markers of an input, or the 422 entries for one that is unknown or malformed."""
    field, text = _message(input)
    found: dict[str, Any] = {}
    errors: list[InvalidField] = []
    for match in _MARKER.finditer(text):
        name, value = match.group(1), match.group(2)
        try:
            if name in ("fail", "stall"):
                found[f"{name}_after"] = _count(name, value)
            elif name == "slow":
                found["slow"] = _seconds(value)
            elif name == "bad-json":
                if value is not None and value not in _BAD_JSON:
                    raise ValueError(f"[[emulator:bad-json=KIND]] takes {' or '.join(_BAD_JSON)}, not {value!r}")
                found["bad_json"] = value or "schema"
            elif name in ("fail-create", "5xx-once") and value is None:
                found["fail_create" if name == "fail-create" else "error_once"] = True
            elif name in ("fail-create", "5xx-once"):
                raise ValueError(f"[[emulator:{name}]] takes no value")
            else:
                raise ValueError(f"unknown emulator marker {match.group(0)} (known: {', '.join(MARKER_NAMES)})")
        except ValueError as exc:
            errors.append(InvalidField("emulator_marker", field, str(exc)))
    if errors:
        return Markers(field, text), errors
    return Markers(field=field, text=text, **found), []


def tokens_per_second(markers: Markers, count: int) -> float | None:
    """The pace that spreads `count` tokens (or steps) over the `slow` seconds; None without it."""
    if markers.slow is None:
        return None
    if markers.slow == 0 or count == 0:
        return 0.0  # as fast as possible
    rate = count / markers.slow
    return rate if math.isfinite(rate) else 0.0
