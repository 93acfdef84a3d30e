"""Where the token and the API address come from, and where the token may go.

Read at request time, never stored. Pure: no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from urllib.parse import SplitResult, urlsplit

DEFAULT_BASE_URL = "https://api.replicate.com"
# Replicate's own domains: the API, the web app, and the stream hosts, which are seen as
# streaming.api.replicate.com, stream.replicate.com and *.svc.*.c.replicate.net.
# Not replicate.delivery: it serves files from signed URLs, which need no token.
REPLICATE_DOMAINS = ("replicate.com", "replicate.net")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def find_token(api_key: str | None = None) -> str | None:
    """The argument, else REPLICATE_API_TOKEN, else gpt4free's REPLICATE_API_KEY."""
    for candidate in (api_key, os.environ.get("REPLICATE_API_TOKEN"), os.environ.get("REPLICATE_API_KEY")):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def base_url() -> str:
    """REPLICATE_BASE_URL (an emulator, a gateway), else Replicate's API."""
    return os.environ.get("REPLICATE_BASE_URL", "").strip().rstrip("/") or DEFAULT_BASE_URL


@functools.lru_cache(maxsize=64)  # asked for every request, of a handful of hosts
def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the API's base URL, or None when it can."""
    parts = _split(url)
    if parts is None or parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return f"{_shown(url)} is not an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "it holds a user name or password; the token is the only credential sent"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (f"{_shown(url)} is plain http to another machine, and the token travels only over "
                "https (or plain http to 127.0.0.1, ::1 or localhost)")
    return None


def may_send_token(url: str, base: str) -> bool:
    """Whether the token may go to ``url`` when the API is at ``base``.

    Over https: the API's exact origin, or a host of Replicate's own domains. Over plain
    http: only when the API itself is on this machine, and then only to the API's host
    (the emulator serves its streams on a second port of that host, as Replicate does on a
    second host). Never to a URL that carries a user name or a password.
    """
    target, api = _split(url), _split(base)
    if target is None or api is None or not target.hostname or target.username is not None \
            or target.password is not None:
        return False
    if _origin(target) == _origin(api):
        return target.scheme == "https" or is_loopback(api.hostname)
    if target.scheme == "https":
        host = target.hostname.rstrip(".")
        return any(host == domain or host.endswith("." + domain) for domain in REPLICATE_DOMAINS)
    return api.scheme == "http" and is_loopback(api.hostname) and target.hostname == api.hostname


def same_origin(url: str, base: str) -> bool:
    """Same scheme, host and port."""
    target, api = _split(url), _split(base)
    return target is not None and api is not None and _origin(target) == _origin(api)


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").rstrip("."), parts.port or _DEFAULT_PORTS.get(parts.scheme)


def _shown(url: str) -> str:
    """The URL without any user name or password, for messages."""
    parts = _split(url)
    if parts is None or "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
