"""Every setting, declared once: its type, default, bounds and help. Pure.

The magic's ``%config`` traits (``traits.py``), the ``%%replicate`` flags and the CLI's
parser (``options.py``), the panel's controls (``panel_model.py``, ``panel.py``) and the
request builder (``request.py``) all read these declarations, so a bound or a default is
written here and nowhere else. ``Setting.check`` is the one rule: it returns the value, or
raises ``ValueError`` with the allowed range in its message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .catalog import DEFAULT_MODEL

__all__ = ["SETTINGS", "Setting", "Timeouts"]


@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` None means "not sent: the model's own default applies"."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    low_open: bool = False  # the bound itself is not allowed: timeouts must be > 0
    high: float | None = None
    choices: tuple[Any, ...] = ()
    # Where a slider ends in the panel: a common range, not a limit (models set their own).
    slider_high: float | None = None

    def allowed(self) -> str:
        """The rule in words, as error messages give it: "a number > 0 and <= 1"."""
        if self.choices:
            names = [c if isinstance(c, str) else repr(c) for c in self.choices]
            return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        if self.type is bool:
            return "True or False"
        if self.type is dict:
            return "a dict of model inputs"
        if self.type is str:
            return "text"
        noun = "a whole number" if self.type is int else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_number(self.high)}")
        return " and ".join([f"{noun} {bounds[0]}", *bounds[1:]]) if bounds else noun

    def check(self, value: Any) -> Any:
        """The value, if it follows the rule; else ``ValueError`` naming what is allowed."""
        if self.type in (int, float):
            wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
            if wrong_type or (self.type is int and not float(value).is_integer()):
                raise ValueError(f"invalid value {value!r} (allowed: {self.allowed()})")
            # nan and inf pass float() but are never a sensible setting.
            if not math.isfinite(value) or not self._within(float(value)):
                raise ValueError(f"invalid value {value!r} (allowed: {self.allowed()})")
            return self.type(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"invalid value {value!r} (allowed: {self.allowed()})")
        if not isinstance(value, self.type):
            raise ValueError(f"invalid value {value!r} (allowed: {self.allowed()})")
        return value

    def _within(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_DECLARED = [
    Setting("model", str, DEFAULT_MODEL, "model to run: owner/name, owner/name:version or "
            "deployments/owner/name (a deployment of yours)"),
    Setting("temperature", float, None, "sampling temperature; 0 is the most predictable",
            low=0, slider_high=2),
    Setting("top_p", float, None, "nucleus sampling: keep the tokens within this probability mass",
            low=0, low_open=True, high=1),
    Setting("top_k", int, None, "sample only from the K most likely tokens", low=1),
    Setting("max_tokens", int, None, "the longest reply, in tokens", low=1),
    Setting("system", str, None, "system prompt for this conversation"),
    Setting("max_history", int, 20, "earlier turns sent with each request (0: none)", low=0),
    Setting("timeout", float, 180.0, "seconds without a token before a stream is given up (idle limit)",
            low=0, low_open=True),
    Setting("connect_timeout", float, 10.0, "seconds to wait for a connection to Replicate",
            low=0, low_open=True),
    Setting("default_inputs", dict, MappingProxyType({}),
            "extra model inputs sent with every request; the cell's own settings and -i win"),
    Setting("output_format", str, "markdown", "how replies show: markdown or text",
            choices=("markdown", "text")),
    Setting("show_metrics", bool, True, "show a line with tokens, time to first token and speed after a reply"),
    Setting("expand_variables", bool, True, "replace {name} in the prompt with that variable's value"),
    Setting("context_budget", int, 2000, "tokens (counted as 4 characters each) that one {name} value or "
            "--context variable may take in the prompt: a DataFrame becomes a description of its shape, columns "
            "and first rows, a longer value is cut with a note", low=50, high=1_000_000),
    Setting("log", bool, True, "write every exchange to the local log (never the API token)"),
    Setting("log_path", str, "", "the local log's file; empty: $REPLICATE_MAGIC_DB, else log.db in the "
            "user data directory"),
    Setting("cache", object, False, "replay a reply from the local log when it holds the same model and "
            "input; 'only': never ask Replicate, fail what is not in the log", choices=(False, True, "only")),
    Setting("concurrency", int, 8, "predictions in flight at once for --each and replicate_magic.map",
            low=1, high=256),
    Setting("create_rate", int, 600, "prediction creates a minute for this kernel, all cells and batches "
            "together (Replicate allows 600, fewer on a low balance); a 429 pauses them all", low=1),
    Setting("embed_limit", float, 20.0, "output files up to this many MB are embedded in the notebook "
            "(shown, and kept when it is saved); larger ones are saved to disk and linked", low=0),
    Setting("prices", dict, MappingProxyType({}), "price overrides over the bundled table, e.g. "
            "{'owner/name': {'input_per_million': 0.5, 'output_per_million': 1.5}}"),
]
SETTINGS: Mapping[str, Setting] = MappingProxyType({s.name: s for s in _DECLARED})


@dataclass(frozen=True)
class Timeouts:
    """A connect limit and an idle (read) limit; never a total limit on a stream.

    A JSON answer has a total limit as well (``request``, else the idle limit): one that
    trickles in a byte at a time never goes idle, but must still end.
    """

    connect: float = SETTINGS["connect_timeout"].default
    idle: float = SETTINGS["timeout"].default
    request: float | None = None

    @property
    def total(self) -> float:
        return self.request if self.request is not None else self.idle
