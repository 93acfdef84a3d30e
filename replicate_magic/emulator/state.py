"""State shared by the API, stream and file servers, plus the middleware they use."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .faults import FaultBook
from .files import FileStore
from .hosts import expected_host, host_allowed
from .limits import (
    DEFAULT_MAX_PREDICTIONS,
    DEFAULT_MAX_RECORDED_BODY,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_TIMES,
    MAX_BODY,
    MAX_FILES_BODY,
    PredictionStore,
    RecentList,
)
from .problems import (
    cloudflare_bad_gateway,
    cloudflare_too_large,
    foreign_host,
    internal_error,
    not_found,
    payload_too_large,
    problem,
    unauthenticated,
)
from .throttle import TokenBucket

__all__ = ["RecordedRequest", "EmulatorState", "STATE_KEY", "recording_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: which server, method, path with query, headers, body.

    Only the body's first bytes are kept (`max_recorded_body`, 64 KB by default) with its
    full `body_length`; for a body refused as too large, `body` is empty and `body_length`
    is the declared Content-Length (0 when none was sent).
    """

    server: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(default=b"", repr=False)
    body_length: int = 0

    @property
    def truncated(self) -> bool:
        return len(self.body) < self.body_length

    @property
    def json(self) -> Any:
        """The body parsed as JSON (a fresh copy each time); None if empty, truncated or not JSON."""
        # Parsed on demand: JSON can grow 20-fold in memory, the kept bytes cannot.
        if not self.body or self.truncated:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class EmulatorState:
    token: str | None
    tokens_per_second: float
    cold_start: float
    line_ending: str
    split_writes: bool
    bind_host: str = "127.0.0.1"  # what the servers listen on: decides the Host headers answered
    max_recorded_body: int = DEFAULT_MAX_RECORDED_BODY
    base_url: str = ""
    stream_base: str = ""
    faults: FaultBook = field(default_factory=FaultBook)
    predictions: PredictionStore = field(
        default_factory=lambda: PredictionStore(DEFAULT_MAX_PREDICTIONS))
    requests: RecentList[RecordedRequest] = field(
        default_factory=lambda: RecentList(DEFAULT_MAX_REQUESTS))
    cancels: RecentList[str] = field(default_factory=lambda: RecentList(DEFAULT_MAX_REQUESTS))
    cancel_seen: threading.Condition = field(default_factory=threading.Condition)
    closing: bool = False
    file_base: str = ""  # the file host (replicate.delivery on the real service)
    file_lifetime: float = 3600.0  # seconds an output file stays on the file host
    upload_lifetime: float = 24 * 3600.0  # seconds a Files API upload lives
    image_scale: float = 0.25  # output images are the real size times this (small by default)
    deployments: dict[str, str | None] = field(default_factory=dict)  # "owner/name" -> model, None: no release
    uploads: FileStore = field(default_factory=FileStore)
    outputs: FileStore = field(default_factory=FileStore)
    file_authorizations: int = 0  # file-host requests that carried an Authorization header
    create_bucket: TokenBucket | None = None  # the create rate limit; None: unlimited
    # time.monotonic() of each create that passed the rate limit, and of each create answered 429
    create_times: RecentList[float] = field(default_factory=lambda: RecentList(DEFAULT_MAX_TIMES))
    throttled: RecentList[float] = field(default_factory=lambda: RecentList(DEFAULT_MAX_TIMES))
    in_flight: int = 0  # predictions created and not yet terminal
    peak_in_flight: int = 0
    seen_once: RecentList[str] = field(default_factory=lambda: RecentList(DEFAULT_MAX_REQUESTS))

    def prediction_started(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def prediction_ended(self) -> None:
        self.in_flight -= 1

    def first_sight(self, text: str) -> bool:
        """True the first time `text` is seen (remembers a digest of the newest ones)."""
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if digest in self.seen_once:
            return False
        self.seen_once.append(digest)
        return True

    def authorized(self, request: web.Request) -> bool:
        """Bearer or the older Token scheme; token=None accepts any non-empty token."""
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() not in ("bearer", "token") or not value:
            return False
        return self.token is None or value == self.token

    def record_cancel(self, prediction_id: str) -> None:
        with self.cancel_seen:
            self.cancels.append(prediction_id)
            self.cancel_seen.notify_all()


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)


def _is_upload(request: web.Request) -> bool:
    return request.method == "POST" and request.path.rstrip("/") == "/v1/files"


def recording_middleware(server: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse foreign Hosts, record the request (before anything else can reject it),
    refuse oversized bodies, then require the token (not on the file host, which, like
    replicate.delivery, serves anyone holding a URL: it only counts the tokens it is sent)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        refusal = _check_host(request, state.bind_host)
        if refusal is not None:
            return refusal  # not recorded, body never read: it was not meant for us
        upload = _is_upload(request)
        raw = await _read_body(request, MAX_FILES_BODY if upload else MAX_BODY)
        state.requests.append(_record(server, request, raw, state.max_recorded_body))
        if raw is None:
            return cloudflare_too_large() if upload else payload_too_large(MAX_BODY)
        if server == "api":
            fault = _api_fault(state)
            if fault is not None:
                return fault
        if server == "files":
            if "Authorization" in request.headers:
                state.file_authorizations += 1
        elif not state.authorized(request):
            return unauthenticated()
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return not_found()
        except web.HTTPMethodNotAllowed:
            return problem(405, "Method not allowed.", "Method Not Allowed")

    return middleware


def _local_address(request: web.Request) -> tuple[str, int] | None:
    """The (address, port) this connection reached: where the Host must point."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


def _check_host(request: web.Request, bind_host: str) -> web.Response | None:
    """None when the Host header names this server; else the 403 to send."""
    local = _local_address(request)
    hosts = request.headers.getall("Host", [])
    if local is not None and len(hosts) == 1 and host_allowed(hosts[0], local, bind_host):
        return None
    return foreign_host(expected_host(local) if local is not None else None)


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is over `limit` (uploads may be larger than other
    bodies, so the app's client_max_size is the upload limit and others are checked here)."""
    if not request.can_read_body:
        return b""
    if (request.content_length or 0) > limit:
        return None  # declared too large: refuse without reading any of it
    try:
        raw = await request.read()  # stops reading once past client_max_size
    except web.HTTPRequestEntityTooLarge:
        return None
    return raw if len(raw) <= limit else None


def _record(server: str, request: web.Request, raw: bytes | None, keep: int) -> RecordedRequest:
    length = len(raw) if raw is not None else request.content_length or 0
    return RecordedRequest(
        server=server,
        method=request.method,
        path=request.path_qs,
        headers=dict(request.headers.items()),
        body=raw[:keep] if raw else b"",
        body_length=length,
    )


def _api_fault(state: EmulatorState) -> web.Response | None:
    # These sit in front of auth, like Cloudflare and a crashing frontend would.
    if state.faults.take_counter("html_error"):
        return cloudflare_bad_gateway()
    if state.faults.take_counter("server_error"):
        return internal_error()
    return None
