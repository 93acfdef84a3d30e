"""Text that grows token by token without quadratic copying. Pure.

``obj.text += token`` copies the whole text so far on every token (CPython grows a string
in place only when nothing else refers to it, and an attribute does), which made a
50,000-token stream spend most of its time copying (bench/README.md).
"""

from __future__ import annotations


class TextParts:
    def __init__(self) -> None:
        self._parts: list[str] = []

    def append(self, piece: str) -> None:
        self._parts.append(piece)

    def __bool__(self) -> bool:
        return bool(self._parts)

    @property
    def value(self) -> str:
        """The text so far; joins the parts once (read it on the appending thread, or after)."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @value.setter
    def value(self, text: str) -> None:
        self._parts[:] = [text] if text else []
