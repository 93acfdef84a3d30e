"""Error responses the way Replicate sends them: RFC 7807 problem details, or Cloudflare HTML."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from .validation import InvalidField

__all__ = [
    "problem", "unauthenticated", "not_found", "invalid_version", "validation_failed",
    "throttled", "billing_required", "internal_error", "cloudflare_bad_gateway",
    "foreign_host", "payload_too_large",
]

PROBLEM_JSON = "application/problem+json"

_CLOUDFLARE_502 = """<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<html class="no-js" lang="en-US">
<head>
<title>api.replicate.com | 502: Bad gateway</title>
<meta charset="UTF-8" />
</head>
<body>
<div id="cf-wrapper">
  <div id="cf-error-details" class="cf-error-details-wrapper">
    <h1><span class="cf-error-type">Bad gateway</span> <span class="code-label">Error code 502</span></h1>
    <p>The web server reported a bad gateway error.</p>
    <p>Performance &amp; security by <a href="https://www.cloudflare.com/">Cloudflare</a></p>
    <p>Cloudflare Ray ID: <strong>8f0e0e0e0e0e0e0e</strong> (emulated)</p>
  </div>
</div>
</body>
</html>
"""


def problem(status: int, detail: str, title: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {}
    if title is not None:
        body["title"] = title
    body.update({"detail": detail, "status": status}, **extra)
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


def unauthenticated() -> web.Response:
    return problem(401, "You did not pass a valid authentication token", "Unauthenticated")


def not_found(detail: str = "The requested resource could not be found.") -> web.Response:
    return problem(404, detail, "Not found")


def model_not_found() -> web.Response:
    """What Replicate answers for a model it does not have: a generic body naming nothing
    (a friendlier one here once hid a client that never said which model was meant)."""
    return web.json_response({"detail": "Not found.", "status": 404}, status=404)


def foreign_host(expected: str | None) -> web.Response:
    where = f"Host: {expected}" if expected else "a Host header naming this server's address"
    return problem(403, "This emulator answers only requests addressed to itself: send "
                   f"{where}. Other names are refused, as a DNS-rebinding web page would use one.",
                   "Forbidden")


def payload_too_large(limit: int) -> web.Response:
    return problem(413, f"Request bodies are limited to {limit // (1024 * 1024)} MiB by the emulator "
                   "(the real API's limit is not documented). Send large files as URLs.",
                   "Payload Too Large")


def invalid_version() -> web.Response:
    return problem(
        422,
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
        "Invalid version or not permitted",
    )


def validation_failed(errors: list[InvalidField]) -> web.Response:
    detail = "".join(f"- {e.field}: {e.description}\n" for e in errors)
    return problem(422, detail, "Input validation failed",
                   invalid_fields=[e.as_json() for e in errors])


def throttled(retry_after: float) -> web.Response:
    seconds = max(0, math.ceil(retry_after))
    unit = "second" if seconds == 1 else "seconds"
    response = problem(429, f"Request was throttled. Expected available in {seconds} {unit}.",
                       "Too Many Requests")
    response.headers["Retry-After"] = str(seconds)
    return response


def billing_required() -> web.Response:
    return problem(402, "You need to set up billing to run this model. "
                   "Go to https://replicate.com/account/billing and set up billing (emulated).",
                   "Billing required")


def internal_error() -> web.Response:
    return problem(500, "An unexpected error occurred (emulated). Please try again later.",
                   "Internal Server Error")


def cloudflare_bad_gateway() -> web.Response:
    response = web.Response(status=502, text=_CLOUDFLARE_502, content_type="text/html")
    response.headers["Server"] = "cloudflare"
    response.headers["CF-RAY"] = "8f0e0e0e0e0e0e0e-AMS"
    return response
