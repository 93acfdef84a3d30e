"""Error responses the way Replicate sends them: RFC 7807 problem details, or Cloudflare HTML."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from .validation import InvalidField

__all__ = [
    "problem", "unauthenticated", "not_found", "invalid_version", "validation_failed",
    "throttled", "billing_required", "internal_error", "cloudflare_bad_gateway",
    "foreign_host", "payload_too_large", "cloudflare_too_large",
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


def _problem_json(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


def problem(status: int, detail: str, title: str | None = None, **extra: Any) -> web.Response:
    """title, detail, status: the key order of Replicate's 401 and 422-version bodies."""
    body: dict[str, Any] = {} if title is None else {"title": title}
    body.update({"detail": detail, "status": status}, **extra)
    return _problem_json(body, status)


def unauthenticated() -> web.Response:
    # Word for word: replicate-python tests/cassettes/run__invalid-token.yaml.
    return problem(401, "You did not pass a valid authentication token", "Unauthenticated")


def not_found() -> web.Response:
    """Every missing thing (model, version, prediction, stream, route) gets the same generic body.

    Recorded for a missing model; the other 404s are assumed to match it (the API's
    framework default), so that no emulator 404 names more than Replicate's would. A 404
    without a title is application/problem+json (tests/cassettes/
    trainings-create__invalid-destination.yaml).
    """
    return _problem_json({"detail": "Not found.", "status": 404}, 404)


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
    # Word for word: a real answer quoted in replicate/getting-started-nextjs issue #125.
    return problem(
        422,
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
        "Invalid version or not permitted",
    )


def validation_failed(errors: list[InvalidField]) -> web.Response:
    """Replicate's 422 for a body or input that fails its schema.

    Shape, key order and wording of real answers quoted in public repositories, e.g.
    {"detail":"- version is required\\n- Additional property model is not allowed\\n",
    "status":422,"title":"Input validation failed","invalid_fields":[...]}: one detail line
    per field, without "<field>: " when the field is the body itself ("").
    """
    detail = "".join(f"- {e.field}: {e.description}\n" if e.field else f"- {e.description}\n"
                     for e in errors)
    return _problem_json({"detail": detail, "status": 422, "title": "Input validation failed",
                          "invalid_fields": [e.as_json() for e in errors]}, 422)


def throttled(retry_after: float, with_status: bool = False) -> web.Response:
    """Body as documented (replicate.com/docs/topics/predictions/rate-limits): a detail only;
    `with_status` adds ``"status": 429``, as the API's other problem bodies have and as a 2026
    throttle answer quoted in nodetool-ai/nodetool issue #5196 does."""
    seconds = max(0, math.ceil(retry_after))
    unit = "second" if seconds == 1 else "seconds"
    body: dict[str, Any] = {"detail": f"Request was throttled. Expected available in {seconds} {unit}."}
    if with_status:
        body["status"] = 429
    response = _problem_json(body, 429)
    response.headers["Retry-After"] = str(seconds)
    return response


def billing_required() -> web.Response:
    # Word for word: a real answer quoted in replicate/replicate-javascript issue #342.
    return problem(402, "You need to set up billing to run this model. Go to "
                   "https://replicate.com/account/billing#billing to set it up. If you have "
                   "recently set up billing, please wait a few minutes before trying again.",
                   "Billing required")


def internal_error() -> web.Response:
    return problem(500, "An unexpected error occurred (emulated). Please try again later.",
                   "Internal Server Error")


def cloudflare_bad_gateway() -> web.Response:
    response = web.Response(status=502, text=_CLOUDFLARE_502, content_type="text/html")
    response.headers["Server"] = "cloudflare"
    response.headers["CF-RAY"] = "8f0e0e0e0e0e0e0e-AMS"
    return response


# Replicate answered a 215 MB upload with "413 Request Entity Too Large: <html>..."
# (replicate/replicate-javascript issue #286). The rest of the page is reconstructed: 100 MB is
# Cloudflare's request body limit, and this is the page Cloudflare serves for it (unverified).
_CLOUDFLARE_413 = """<html>\r
<head><title>413 Request Entity Too Large</title></head>\r
<body>\r
<center><h1>413 Request Entity Too Large</h1></center>\r
<hr><center>cloudflare</center>\r
</body>\r
</html>\r
"""


def cloudflare_too_large() -> web.Response:
    response = web.Response(status=413, text=_CLOUDFLARE_413, content_type="text/html")
    response.headers["Server"] = "cloudflare"
    return response
