"""Saved prompt templates: what one is, and how a cell fills it. Pure.

A template is a ``%%replicate`` line and a prompt kept under a name in the local store
(``store.LogStore.save_template``). ``%%replicate -T NAME`` runs it: the template's flags
apply under the cell's own (``options.line_over``), and the cell's text fills the prompt's
``{input}`` (by the rules of every ``{name}``: outside code only), or, when the prompt has no
``{input}``, follows the prompt after a blank line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .prompt_template import Expansion, names_used

__all__ = ["INPUT", "Template", "joined"]

INPUT = "input"  # the placeholder the cell's text fills: {input}


@dataclass(frozen=True)
class Template:
    name: str
    line: str  # the %%replicate line, flags only
    prompt: str  # as typed, placeholders unexpanded
    saved_at: str = ""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Template:
        return cls(row["name"], row["line"], row["prompt"], row.get("saved_at", ""))

    @property
    def takes_input(self) -> bool:
        """Whether its prompt has an ``{input}`` outside code for the cell's text."""
        return INPUT in names_used(self.prompt)

    def source(self, cell: str) -> str:
        """The text to expand: the prompt, with the cell's text after it when it has no ``{input}``
        (the cell's text is then expanded with it, as a cell's own is)."""
        if self.takes_input or not cell.strip():
            return self.prompt
        return f"{self.prompt.rstrip()}\n\n{cell}"

    def described(self) -> str:
        """One line about it: "-t 0.2 --no-history · 3 lines with {input} · saved 2026-05-01 09:30 UTC"."""
        lines = len(self.prompt.strip().splitlines())
        parts = [self.line or "(no flags)",
                 f"{lines} line{'' if lines == 1 else 's'}" + (" with {input}" if self.takes_input else "")]
        if self.saved_at:
            parts.append(f"saved {self.saved_at[:16].replace('T', ' ')} UTC")
        return " · ".join(parts)


def joined(*expansions: Expansion, note: str = "") -> Expansion:
    """The last expansion's text, with what every one expanded, withheld and noted (each once)."""
    names = dict.fromkeys(n for e in expansions for n in e.names)
    withheld = dict.fromkeys(n for e in expansions for n in e.withheld)
    notes = dict.fromkeys([*(n for e in expansions for n in e.notes), *([note] if note else [])])
    return Expansion(expansions[-1].text, tuple(names), tuple(withheld), tuple(notes))
