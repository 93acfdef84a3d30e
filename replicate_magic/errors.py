"""The errors users see. Pure: no I/O, no IPython, no aiohttp.

Every error renders as one line in a notebook (``_render_traceback_``), so a failing cell
stops Run All without a wall of frames. ``MissingAuthError`` and ``ResponseError`` are the
names gpt4free's provider uses; the finer classes subclass ``ResponseError``.
"""

from __future__ import annotations

import json
from typing import Any

from .terminal import clean

LOGIN_URL = "https://replicate.com/account/api-tokens"


class ReplicateMagicError(Exception):
    """Base class: an error with a message meant for people, shown without a traceback."""

    def __str__(self) -> str:
        # Messages quote server text (details, model errors) and IPython prints them raw in
        # a terminal: no control character or escape sequence may pass.
        return clean(super().__str__())

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ReplyInterrupted(ReplicateMagicError):
    """The user interrupted a reply (or the cell, before the request was sent)."""


class UnexpectedError(ReplicateMagicError):
    """A failure the code did not foresee (a bug): one line here, the frames in the log."""


class NotInLogError(ReplicateMagicError):
    """Replay only (``cache = "only"``), and the local log holds no reply for this request."""


class InvalidAnswerError(ReplicateMagicError):
    """A JSON answer was asked for (``-f json``, ``--schema``) and the reply is not that JSON,
    after the retries too; ``raw`` is the last reply's text, ``reason`` which rule failed."""

    def __init__(self, message: str, *, raw: str = "", reason: str = "", tries: int = 1) -> None:
        super().__init__(message)
        self.raw = raw
        self.reason = reason
        self.tries = tries


class MissingAuthError(ReplicateMagicError):
    """No API token was found, or Replicate rejected it (HTTP 401)."""


class InvalidRequestError(ReplicateMagicError, ValueError):
    """The request cannot be sent as asked: a malformed model name, empty messages, ..."""


class ResponseError(ReplicateMagicError):
    """Replicate or the stream failed; ``status``, ``title`` and ``detail`` where known."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        prediction_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.prediction_id = prediction_id


class RateLimitError(ResponseError):
    """HTTP 429 persisted after the bounded retries."""


class ModelError(ResponseError):
    """The prediction itself failed: an ``error`` event, or status ``failed``."""


class StreamError(ResponseError):
    """The event stream broke: dropped before ``done`` and not resumable, or stalled."""


# What to tell the user to do, by status. One place, so messages stay consistent.
_ADVICE: dict[int, str] = {
    401: f"check REPLICATE_API_TOKEN (create a token at {LOGIN_URL})",
    402: "set up billing on replicate.com, or use a free model",
    403: "your token is not allowed to use this resource",
    404: "check the model name (owner/name or owner/name:version)",
    422: "check the inputs against the model's schema",
    429: "wait a moment and try again",
}


def missing_token_error() -> MissingAuthError:
    return MissingAuthError(
        "No Replicate API token: set REPLICATE_API_TOKEN (or pass api_key=...). "
        f"Create one at {LOGIN_URL}"
    )


def parse_problem(status: int, content_type: str, body: str) -> tuple[str | None, str | None]:
    """Read ``(title, detail)`` from a problem-details body; HTML or junk gives a short summary."""
    if "json" in content_type:
        try:
            data: Any = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            data = None
        if isinstance(data, dict):
            title = data.get("title")
            detail = data.get("detail")
            if detail is None and isinstance(data.get("error"), (str, dict)):
                error = data["error"]
                detail = error.get("message") if isinstance(error, dict) else error
            return (_text(title), _text(detail))
    stripped = body.strip()
    if "html" in content_type or stripped.lower().startswith(("<!doctype", "<html")):
        return (None, "the server answered with an HTML error page")
    return (None, _shorten(stripped) or None)


def error_for_status(
    status: int,
    title: str | None,
    detail: str | None,
    *,
    prediction_id: str | None = None,
) -> ReplicateMagicError:
    """Turn an HTTP failure into one clear sentence with status, title and detail."""
    label = f"HTTP {status}" + (f" {title}" if title else "")
    reason = f": {detail.rstrip('. ')}" if detail else ""
    advice = _ADVICE.get(status) or ("Replicate had a server problem; try again" if status >= 500 else "")
    message = f"Replicate answered {label}{reason}." + (f" Next: {advice}." if advice else "")
    if status == 401:
        return MissingAuthError(message)
    cls = RateLimitError if status == 429 else ResponseError
    return cls(message, status=status, title=title, detail=detail, prediction_id=prediction_id)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _shorten(value)
    try:
        return _shorten(json.dumps(value))
    except (ValueError, RecursionError):  # a server's title or detail nested absurdly deep
        return None


def _shorten(text: str, limit: int = 300) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
