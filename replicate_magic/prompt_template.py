"""``{name}`` expansion in a prompt, forgiving by design. Pure.

Prompts are full of braces that are not placeholders (JSON, dict literals, f-strings, LaTeX),
so only ``{name}`` for a name the namespace has, ``{In[n]}`` and ``{Out[n]}`` are replaced;
everything else, ``{{`` and ``}}`` included, stays exactly as typed. Nothing raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["expand"]

# A doubled brace is matched (and kept) first, so "{{name}}" is never expanded.
_PLACEHOLDER = re.compile(
    r"\{\{|\}\}"
    r"|\{(?:(?P<history>In|Out)\[(?P<index>-?\d+)\]|(?P<name>[^\W\d]\w*))\}"
)
_MISSING = object()


def expand(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace the placeholders that ``namespace`` can fill with ``str(value)``."""

    def replace(match: re.Match[str]) -> str:
        value = _lookup(match, namespace)
        if value is _MISSING:
            return match.group()
        try:
            return str(value)
        except Exception:  # a user object with a broken __str__ must not fail the cell
            return match.group()

    return _PLACEHOLDER.sub(replace, text)


def _lookup(match: re.Match[str], namespace: Mapping[str, Any]) -> Any:
    if match["name"] is not None:
        return namespace.get(match["name"], _MISSING)
    if match["history"] is None:  # "{{" or "}}"
        return _MISSING
    # IPython's shapes: In is a list of input strings, Out a dict from prompt number to value.
    history = namespace.get(match["history"])
    try:
        return history[int(match["index"])]  # type: ignore[index]
    except Exception:  # out of range, no such prompt number, or a user's own In/Out: keep the text
        return _MISSING
