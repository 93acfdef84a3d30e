"""gpt4free's message shapes and prompt formatting, kept for parity. Pure.

``messages`` is a list of ``{"role": ..., "content": ...}`` dicts, where content may be a
string, a list of parts (``{"type": "text", "text": ...}``; images are dropped) or None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Message = Mapping[str, Any]
SYSTEM_ROLES = ("system", "developer")


def to_string(content: Any) -> str:
    """Flatten message content the way gpt4free does: text parts only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, (list, tuple)):
        return "".join(
            to_string(part)
            for part in content
            if not isinstance(part, Mapping) or part.get("type", "text") == "text"
        )
    return str(content)


def normalize(messages: Iterable[Message]) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` string dicts; raises ValueError on a malformed message."""
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"message {index} must be a dict with 'role' and 'content'")
        result.append({"role": str(message["role"]), "content": to_string(message.get("content"))})
    return result


def split_system(messages: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    """Separate system/developer messages (joined by newlines) from the rest."""
    system = [m["content"] for m in messages if m["role"] in SYSTEM_ROLES and m["content"].strip()]
    rest = [m for m in messages if m["role"] not in SYSTEM_ROLES]
    return ("\n".join(system) if system else None), rest


def format_prompt(messages: list[dict[str, str]]) -> str:
    """One message: its content. Several: "Role: content" lines, then "Assistant:".

    Blank messages are skipped, as in gpt4free's ``format_prompt``.
    """
    if len(messages) == 1:
        return messages[0]["content"]
    lines = [
        f"{m['role'].capitalize()}: {m['content']}" for m in messages if m["content"].strip()
    ]
    return "\n".join([*lines, "Assistant:"])
