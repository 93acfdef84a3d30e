"""The local log's rows: the ``Exchange`` value, and how one becomes the parameters of an
INSERT (checked, scrubbed of the token, its JSON canonical) and comes back from a SELECT;
the search's WHERE clause; the per-model totals. I/O only by what it raises
(``store_layout.StoreError``): no file is touched here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .environment import find_token
from .pricing import Entry, estimate
from .store_layout import _COLUMNS, _TRIGRAMS, StoreError

# "reset": not an exchange but a mark that the conversation was emptied there (restore starts after it).
STATUSES = ("succeeded", "interrupted", "failed", "reset")
REDACTED = "[REDACTED]"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exchange:
    """One exchange with a model, as logged. ``input`` is exactly what was sent, except that a
    local file is its short reference (``attachments``), not its data URI or upload URL."""

    time: str | float = dataclasses.field(default_factory=utc_now)  # UTC ISO 8601 (or epoch seconds in)
    chat: str = "default"
    prompt: str = ""
    system: str | None = None
    model: str
    version: str | None = None
    input: dict[str, Any]
    reply: str
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # reserved for file outputs
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    prediction_id: str | None = None
    status: str = "succeeded"
    cell_id: str | None = None
    notebook: str | None = None
    replayed: bool = False  # shown from the log, not a new prediction
    id: int | None = None


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, Unicode kept. Replay compares these."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)



# -- rows in and out -----------------------------------------------------------------------------


class _Scrubber:
    """Replaces every secret in strings, dict keys and values, and lists."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first

    @classmethod
    def now(cls) -> _Scrubber:
        """The token as requests would use it, and both variables as set (stripped or not)."""
        found = [find_token()]
        for name in ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY"):
            value = os.environ.get(name) or ""
            found += [value, value.strip()]
        return cls(s for s in found if s)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def _row(exchange: Exchange, scrub: _Scrubber) -> dict[str, Any]:
    """The parameters of one INSERT: checked, scrubbed, JSON as canonical text."""
    if exchange.status not in STATUSES:
        raise StoreError(f"Cannot log an exchange with status {exchange.status!r}: "
                         f"it must be one of {', '.join(STATUSES)}")
    text = _json_of(scrub(dict(exchange.input)), "the input")
    return {
        "time": _utc(exchange.time), "chat": scrub(exchange.chat), "prompt": scrub(exchange.prompt),
        "system": scrub(exchange.system), "model": scrub(exchange.model), "version": scrub(exchange.version),
        "input": text, "input_hash": _digest(text), "reply": scrub(exchange.reply),
        "files": _json_of(scrub(list(exchange.files)), "the files"),
        "metrics": _json_of(scrub(dict(exchange.metrics)), "the metrics"),
        "prediction_id": scrub(exchange.prediction_id), "status": exchange.status,
        "cell_id": scrub(exchange.cell_id), "notebook": scrub(exchange.notebook),
        "replayed": int(bool(exchange.replayed)),
    }


def _json_of(value: Any, what: str) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Cannot log {what}: it is not JSON ({exc})") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")  # Replicate's times carry nanoseconds


def _utc(value: str | float | datetime) -> str:
    """A fixed-width UTC ISO 8601 time, so that text order is time order."""
    try:
        if isinstance(value, bool):
            raise TypeError("a bool is not a time")
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, timezone.utc)
        elif isinstance(value, datetime):
            moment = value
        else:
            moment = datetime.fromisoformat(_EXTRA_DIGITS.sub(r"\1", value.strip()).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError, OSError, AttributeError) as exc:
        raise StoreError(f"Cannot log an exchange with the time {value!r} ({exc})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _exchange(row: tuple[Any, ...], path: Path) -> Exchange:
    values = dict(zip(_COLUMNS, row, strict=True))
    where = f"row {values['id']}"
    values["input"] = _loads(values["input"], where, path)
    values["files"] = _loads(values["files"], where, path)
    values["metrics"] = _loads(values["metrics"], where, path)
    values["replayed"] = bool(values["replayed"])
    return Exchange(**values)


def _loads(text: str, where: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise StoreError(f"The log at {path} has damaged data in {where}; that entry cannot be read") from None


def _filters(model: str | None, search: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of ``recent`` and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if model:
        # The model as typed, also as logged from another API ("owner/name @ http://...").
        clauses.append("(model = ? OR model LIKE ? ESCAPE '\\')")
        params += [model, _escaped(model) + " @ %"]
    if search:
        if search.isascii():  # LIKE ignores case for ASCII letters, and uses no Python per row
            clauses.append("(prompt LIKE ? ESCAPE '\\' OR reply LIKE ? ESCAPE '\\')")
            params += [_like(search)] * 2
        else:
            clauses.append("(rm_contains(prompt, ?) OR rm_contains(reply, ?))")
            params += [search.casefold()] * 2
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _indexable(search: str) -> bool:
    """Whether the text index can answer ``search``: three characters or more (it holds
    trigrams), and no letter whose case folds to more than itself. The index folds case one
    character at a time, as LIKE does for ASCII; the scan of other text uses ``str.casefold``,
    where "ß" is "ss": such a search scans, so that it finds what it found before the index."""
    return len(search) >= _TRIGRAMS and (search.isascii() or search.casefold() == search.lower())


def _escaped(text: str) -> str:
    """``text`` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str) -> str:
    escaped = _escaped(text)
    return f"%{escaped}%"


def _contains(text: str | None, needle: str) -> bool:
    return text is not None and needle in text.casefold()


def _latest_per_cell(exchanges: Iterable[Exchange]) -> list[Exchange]:
    """The kernel's rule: a cell's newer turn replaces its older one in place."""
    turns: list[Exchange] = []
    place: dict[str, int] = {}
    for exchange in exchanges:
        cell = exchange.cell_id
        if cell is not None and cell in place:
            turns[place[cell]] = exchange
            continue
        if cell is not None:
            place[cell] = len(turns)
        turns.append(exchange)
    return turns


def _model_totals(row: tuple[Any, ...], overrides: Mapping[str, Entry] | None) -> dict[str, Any]:
    model, count, replays, tokens_in, tokens_out, seconds = row
    metrics = {key: value for key, value in (("input_token_count", tokens_in), ("output_token_count", tokens_out),
                                            ("predict_time", seconds)) if value is not None}
    # Priced by the model's name, as the line under a reply is, also when another API (the
    # emulator, "owner/name @ http://...") answered: what Replicate would bill for it.
    cost = estimate(model.partition(" @ ")[0], metrics, overrides=overrides)
    return {
        "model": model, "exchanges": count, "replayed": replays or 0,
        "input_tokens": tokens_in, "output_tokens": tokens_out, "predict_seconds": seconds,
        "cost": None if cost is None else cost.amount, "cost_basis": None if cost is None else cost.basis,
    }
