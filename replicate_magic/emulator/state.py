"""State shared by the API and stream servers, plus the middleware both use."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .faults import FaultBook
from .prediction import Prediction
from .problems import cloudflare_bad_gateway, internal_error, not_found, problem, unauthenticated

__all__ = ["RecordedRequest", "EmulatorState", "STATE_KEY", "recording_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: which server, method, path with query, headers, JSON body."""

    server: str
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class EmulatorState:
    token: str | None
    tokens_per_second: float
    cold_start: float
    line_ending: str
    split_writes: bool
    base_url: str = ""
    stream_base: str = ""
    faults: FaultBook = field(default_factory=FaultBook)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    cancel_seen: threading.Condition = field(default_factory=threading.Condition)
    closing: bool = False

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


def recording_middleware(server: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Record every request (before anything can reject it), then require the token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        raw = await request.read() if request.can_read_body else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        state.requests.append(RecordedRequest(
            server=server,
            method=request.method,
            path=request.path_qs,
            headers=dict(request.headers.items()),
            json=body,
        ))
        if server == "api":
            fault = _api_fault(state)
            if fault is not None:
                return fault
        if not state.authorized(request):
            return unauthenticated()
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return not_found()
        except web.HTTPMethodNotAllowed:
            return problem(405, "Method not allowed.", "Method Not Allowed")

    return middleware


def _api_fault(state: EmulatorState) -> web.Response | None:
    # These sit in front of auth, like Cloudflare and a crashing frontend would.
    if state.faults.take_counter("html_error"):
        return cloudflare_bad_gateway()
    if state.faults.take_counter("server_error"):
        return internal_error()
    return None
