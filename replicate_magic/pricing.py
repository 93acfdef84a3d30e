"""What a prediction probably cost, from a small dated price table. Pure, but for one lazy read.

Replicate has no pricing API, so the prices live in ``prices.json`` beside this module: each
entry with the page it was read from and the date. Official language models are priced per
million input and output tokens (the ``input_token_count`` and ``output_token_count``
metrics); other models per second of their hardware (``predict_time``). A model without a
price, or a prediction without the metrics its price needs, gets no estimate: never a guess. A
deployment is priced by its prediction's time on its hardware, shown as a floor: it runs on
instances of its own, and dedicated instances bill all their time online, setup and idle
included (replicate.com/docs/billing), which no metric of a prediction tells.

The functions take the table as an argument; ``load_table`` reads the packaged one the first
time it is needed (importing this module reads nothing). A user's ``overrides`` have the
shape of the table's ``models`` entries and win over them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from .catalog import MODEL_ALIASES

__all__ = ["Cost", "estimate", "format_cost", "entry_problem", "load_table"]

Entry = Mapping[str, Any]
Table = Mapping[str, Any]  # {"models": {name: Entry}, "hardware": {sku: Entry}}

_PER_TOKEN = ("input_per_million", "output_per_million")
_TOKEN_METRICS = ("input_token_count", "output_token_count")


@dataclass(frozen=True)
class Cost:
    """An estimate in US dollars and how it was reckoned, in a few words."""

    amount: float
    basis: str
    floor: bool = False  # at least this much: a deployment's setup and idle time may bill too


@lru_cache(maxsize=1)
def load_table() -> Table:
    """The packaged price table, read once. A missing or broken file prices nothing."""
    try:
        text = resources.files("replicate_magic").joinpath("prices.json").read_text(encoding="utf-8")
        table = json.loads(text)
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, Mapping) else {}


def estimate(
    model: str,
    metrics: Mapping[str, Any] | None,
    table: Table | None = None,
    overrides: Mapping[str, Entry] | None = None,
    hardware: str | None = None,
) -> Cost | None:
    """The cost of one prediction of ``model`` with these metrics, or None when unknown.

    ``hardware`` is the SKU a deployment runs on: without an entry of its own, the deployment
    is priced by its prediction's time on that hardware, as a floor (``Cost.floor``).
    """
    if not isinstance(metrics, Mapping):
        return None
    table = load_table() if table is None else table
    found = _entry_for(model, table, overrides)
    if found is None:
        return _deployment_cost(hardware, _hardware(table), metrics)
    entry, overridden = found
    rows = _hardware(table)
    if entry_problem(entry, rows) is not None:
        return None
    if all(key in entry for key in _PER_TOKEN):
        return _token_cost(entry, metrics, _cited(entry, overridden))
    return _time_cost(entry, rows, metrics, overridden)


def format_cost(cost: Cost | None) -> str:
    """The cost for the line under a reply: "≈ $0.0012" ("≥ $0.0012" for a floor); empty when there is none."""
    if cost is None:
        return ""
    return f"{'≥' if cost.floor else '≈'} ${_amount(cost.amount)}"


def format_cost_amount(amount: float) -> str:
    """A total of estimates (a batch's): "≈ $0.0123"."""
    return f"≈ ${_amount(amount)}"


def entry_problem(entry: Any, hardware: Mapping[str, Any] | None = None) -> str | None:
    """Why ``entry`` cannot price anything (one sentence), or None when it can.

    An entry has ``input_per_million`` and ``output_per_million``, or ``per_second``, or
    ``hardware`` naming a row of the table's hardware list; prices are numbers >= 0.
    """
    if not isinstance(entry, Mapping):
        return "a price entry must be a mapping"
    if any(key in entry for key in _PER_TOKEN):
        missing = [key for key in _PER_TOKEN if _number(entry.get(key)) is None]
        return f"{' and '.join(missing)} must be numbers >= 0" if missing else None
    if "per_second" in entry:
        return None if _number(entry["per_second"]) is not None else "per_second must be a number >= 0"
    if "hardware" in entry:
        sku = entry["hardware"]
        if isinstance(sku, str) and sku in (hardware or {}):
            return None
        return f"the hardware {sku!r} is not in the price table"
    return "give input_per_million and output_per_million, or per_second, or hardware"


# -- finding the entry -------------------------------------------------------------------------


def _key(model: str) -> str:
    """Aliases resolved, the version dropped, lower case: the table's keys."""
    name = model.strip()
    name = MODEL_ALIASES.get(name, name)
    return name.split(":", 1)[0].lower()


def _entry_for(model: str, table: Table, overrides: Mapping[str, Entry] | None) -> tuple[Entry, bool] | None:
    """The model's entry and whether it is the user's; None for a model without a price."""
    if not isinstance(model, str) or not model.strip():
        return None
    key = _key(model)
    for name, entry in (overrides or {}).items():
        if isinstance(name, str) and _key(name) == key:
            return entry, True
    models = table.get("models")
    found = models.get(key) if isinstance(models, Mapping) else None
    return (found, False) if found is not None else None


def _hardware(table: Table) -> Mapping[str, Any]:
    hardware = table.get("hardware")
    return hardware if isinstance(hardware, Mapping) else {}


# -- reckoning ---------------------------------------------------------------------------------


def _token_cost(entry: Entry, metrics: Mapping[str, Any], cited: str) -> Cost | None:
    counts = [_number(metrics.get(key)) for key in _TOKEN_METRICS]
    if counts[0] is None or counts[1] is None:
        return None
    tokens_in, tokens_out = counts[0], counts[1]
    price_in, price_out = float(entry["input_per_million"]), float(entry["output_per_million"])
    amount = (tokens_in * price_in + tokens_out * price_out) / 1_000_000
    basis = (f"{tokens_in:,.0f} input + {tokens_out:,.0f} output tokens at "
             f"${_price(price_in)}/${_price(price_out)} per M ({cited})")
    return Cost(amount, basis)


def _time_cost(entry: Entry, hardware: Mapping[str, Any], metrics: Mapping[str, Any],
               overridden: bool) -> Cost | None:
    seconds = _number(metrics.get("predict_time"))
    if seconds is None:
        return None
    if "per_second" in entry:
        rate, what, cited = float(entry["per_second"]), "", _cited(entry, overridden)
    else:
        # The hardware row carries the price and where it was read; the entry only names it.
        row = hardware[entry["hardware"]]
        if not isinstance(row, Mapping) or _number(row.get("per_second")) is None:
            return None
        rate, what, cited = float(row["per_second"]), f" of {row.get('name') or entry['hardware']}", _cited(row, False)
    basis = f"{_seconds(seconds)} s{what} at ${_price(rate)}/s ({cited})"
    return Cost(seconds * rate, basis)


def _deployment_cost(sku: Any, hardware: Mapping[str, Any], metrics: Mapping[str, Any]) -> Cost | None:
    # Only the prediction's own time is known here, not its instances' setup and idle time.
    if not isinstance(sku, str) or sku not in hardware:
        return None
    cost = _time_cost({"hardware": sku}, hardware, metrics, False)
    return None if cost is None else Cost(cost.amount, f"{cost.basis}; setup and idle time not counted", floor=True)


def _number(value: Any) -> float | None:
    """A finite number >= 0 (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


# -- words -------------------------------------------------------------------------------------


def _cited(entry: Entry, overridden: bool) -> str:
    """Where a price came from and when: "replicate.com, 2026-12-01"; "your price" for overrides."""
    label = entry.get("label")
    if not isinstance(label, str) or not label:
        source = entry.get("source")
        label = (urlsplit(source).hostname or "") if isinstance(source, str) else ""
        label = label.removeprefix("www.") or ("your price" if overridden else "price table")
    read = entry.get("read")
    return f"{label}, {read}" if isinstance(read, str) and read else label


def _price(value: float) -> str:
    """A unit price with its significant decimals and at least two: 0.65, 15.00, 0.000975."""
    whole, _, decimals = f"{value:.8f}".rstrip("0").partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def _amount(value: float) -> str:
    """Two significant digits below a dollar, cents above: 0.0012, 0.42, 1,234.50."""
    if value >= 1:
        return f"{value:,.2f}"
    if value <= 0:
        return "0.00"
    if value < 1e-8:
        return "0.00000001"
    decimals = min(8, max(2, 1 - math.floor(math.log10(value))))
    return f"{value:.{decimals}f}"


def _seconds(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"
