"""Replicate's answers, read defensively. Pure: no I/O.

A server (or whatever sits where the user pointed REPLICATE_BASE_URL) may send anything:
bodies of any size, JSON nested 100,000 deep, ``Infinity``, ``urls`` that are a string,
URLs with credentials in them. Everything here turns such answers into one-line
``ResponseError``s, so that nothing raw reaches the user and the cancel path always has
a valid prediction id to work with.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ResponseError

MAX_JSON_BYTES = 8 * 1024 * 1024  # a prediction with a long output is well under 1 MB
MAX_ERROR_BODY_BYTES = 64 * 1024  # an error page is read this far, then cut
MAX_JSON_DEPTH = 64  # Replicate's deepest answers (schemas) nest about 10 levels
MAX_RETRY_WAIT = 30.0
_MESSAGE_LIMIT = 300
_PREDICTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")  # ASCII only: "²".isdigit() is True
URL_KEYS = ("get", "cancel", "stream", "web")


def parse_json_object(body: str, what: str) -> dict[str, Any]:
    """``body`` as a JSON object, or a ResponseError that names ``what`` was asked."""
    too_deep = ResponseError(f"Replicate answered {what} with JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:  # deeper than the parser itself can go
        raise too_deep from None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ResponseError(f"Replicate answered {what} with something that is not a JSON object")
    if _too_deep(data):
        raise too_deep
    return data


def check_prediction(data: Mapping[str, Any]) -> str:
    """The prediction id of ``data`` (from ``parse_json_object``) when it has the shape of a
    prediction; else a ResponseError. ``prediction.Prediction.parse`` builds the value.

    The error carries the prediction id when that much is valid, so the caller can still
    cancel what was made.
    """
    prediction_id = data.get("id")
    if not isinstance(prediction_id, str) or not _PREDICTION_ID.fullmatch(prediction_id):
        # Depth-checked, so dumping is safe; redacted already, since it came from a redacted body.
        quoted = json.dumps(data, ensure_ascii=False)
        raise ResponseError(f"Replicate answered without a valid prediction id: {shorten(quoted, 200)}")
    problem = _shape_problem(data)
    if problem:
        raise ResponseError(f"Replicate answered with a malformed prediction {prediction_id}: {problem}",
                            prediction_id=prediction_id)
    return prediction_id


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a URL to send a request to, or None."""
    # str.isprintable is False for every whitespace character except the ASCII space.
    if " " in url or not url.isprintable():
        return "it holds spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "it cannot be parsed"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "it holds a user name or password"
    return None


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait: Retry-After (seconds or an HTTP date), else exponential backoff."""
    delay = 0.5 * 2**attempt
    value = (retry_after or "").strip()
    if _SECONDS.fullmatch(value):
        delay = float(value)
    elif value:
        try:
            delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass  # not a date either: keep the backoff
    return min(max(delay, 0.0), MAX_RETRY_WAIT)


def shorten(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """One line of at most ``limit`` characters. Redact first: a cut token is not found."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def server_text(value: Any, redact: Callable[[str], str], limit: int = _MESSAGE_LIMIT) -> str:
    """A server-sent value fit for a message: as text, redacted, then shortened."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return shorten(redact(text), limit)


def _shape_problem(data: Mapping[str, Any]) -> str | None:
    urls = data.get("urls")
    if urls is not None:
        if not isinstance(urls, dict):
            return "urls is not an object"
        for key, url in urls.items():
            if url is not None and not isinstance(url, str):
                return f"urls.{key} is not a string"
        for key in URL_KEYS:
            url = urls.get(key)
            problem = url_problem(url) if isinstance(url, str) else None
            if problem:
                return f"urls.{key} is not usable: {problem}"
    status = data.get("status")
    if status is not None and not isinstance(status, str):
        return "status is not a string"
    return _metrics_problem(data.get("metrics"))


def _metrics_problem(metrics: Any) -> str | None:
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return "metrics is not an object"
    for key, value in metrics.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"metrics.{key} is not a finite number"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python accepts them, JSON does not


def _too_deep(value: Any) -> bool:
    """Iteratively, so that checking cannot itself overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False
