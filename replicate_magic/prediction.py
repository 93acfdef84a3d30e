"""A prediction as Replicate reports it, parsed once into a frozen value. Pure: no I/O.

Answers are checked by ``answers.check_prediction`` first, so every field here has the type
it says: code above reads ``prediction.urls.stream``, never a chain of ``.get()`` calls on
whatever a server sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .answers import URL_KEYS, check_prediction, server_text
from .errors import ModelError, ResponseError

__all__ = ["TERMINAL", "Prediction", "PredictionUrls"]

# "aborted": Replicate's status for a prediction stopped before it started (a deadline, say).
TERMINAL = ("succeeded", "failed", "canceled", "aborted")
_NO_METRICS: Mapping[str, float | None] = MappingProxyType({})


@dataclass(frozen=True)
class PredictionUrls:
    """The URLs the prediction names (None where it names none); checked usable by ``answers``."""

    get: str | None = None
    cancel: str | None = None
    stream: str | None = None
    web: str | None = None


@dataclass(frozen=True)
class Prediction:
    id: str
    status: str | None = None
    urls: PredictionUrls = field(default_factory=PredictionUrls)
    output: Any = None  # the JSON value as sent: text models send a list of string chunks
    error: Any = None
    metrics: Mapping[str, float | None] = field(default_factory=lambda: _NO_METRICS)  # finite numbers or null
    logs: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Prediction:
        """The prediction in ``data`` (a JSON object); a one-line ResponseError when malformed.

        The error carries the prediction id when that much is valid, so the caller can still
        cancel what was made.
        """
        prediction_id = check_prediction(data)
        urls = data.get("urls") or {}
        logs = data.get("logs")
        return cls(
            id=prediction_id,
            status=data.get("status"),
            urls=PredictionUrls(**{kind: urls.get(kind) for kind in URL_KEYS}),
            output=data.get("output"),
            error=data.get("error"),
            metrics=MappingProxyType(dict(data.get("metrics") or {})),
            logs=logs if isinstance(logs, str) else None,  # only ever shown: not worth failing a reply for
        )

    @property
    def terminal(self) -> bool:
        """It has ended on Replicate: nothing more will come, nothing is left to cancel."""
        return self.status in TERMINAL

    def text(self) -> str:
        """The output as text: streaming models report a list of chunks."""
        if self.output is None:
            return ""
        if isinstance(self.output, list):
            return "".join(str(part) for part in self.output)
        return str(self.output)

    def raise_for_status(self, redact: Callable[[str], str] = lambda text: text) -> None:
        """Raise ModelError when it failed, ResponseError when it was canceled or aborted."""
        if self.status == "failed":
            detail = server_text(self.error, redact) if self.error else None
            raise ModelError(f"The model failed: {detail or 'no reason given'}", detail=detail,
                             prediction_id=self.id)
        if self.status in ("canceled", "aborted"):
            raise ResponseError(f"The prediction was {self.status} on Replicate before it finished",
                                prediction_id=self.id)
