"""Replicate's HTTP API over aiohttp: requests, retries, errors and the event stream.

No IPython here. One ``ReplicateClient`` holds the token for one caller; the aiohttp
session it uses is shared per event loop (``sessions.py``).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

import aiohttp
from yarl import URL

from .environment import DEFAULT_BASE_URL, find_token
from .environment import base_url as _env_base_url
from .errors import (
    InvalidRequestError, ResponseError, StreamError, error_for_status, missing_token_error, parse_problem,
)
from .inputs import ModelRef, input_properties
from .sessions import shared_session
from .sse import EventDecoder, ServerSentEvent

USER_AGENT = "replicate-magic/0.1"
_MAX_ATTEMPTS = 4  # one try and three retries, for 429 (any method) and 5xx (GET only)
_MAX_RETRY_WAIT = 30.0
_MAX_RESUMES = 5  # reconnects of one event stream with Last-Event-ID
# Schemas are fetched once per model and base URL; they change only with a new version.
_schema_cache: dict[tuple[str, str], dict[str, Any] | None] = {}


@dataclass(frozen=True)
class Timeouts:
    """A connect limit and an idle (read) limit; never a total limit on a stream."""

    connect: float = 10.0
    idle: float = 180.0


class StreamLost(Exception):
    """The event stream could not be resumed; the caller may poll instead."""


class ReplicateClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        proxy: str | None = None,
        timeouts: Timeouts = Timeouts(),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if proxy and URL(proxy).scheme not in ("http", "https"):
            raise InvalidRequestError(f"Proxy {URL(proxy).with_user(None)} is not an http:// or https:// proxy")
        self._session = session
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.proxy = proxy or None
        self.timeouts = timeouts
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        # POSTs still under way when their caller was cancelled (see request()).
        self.unanswered_posts: list[asyncio.Future[tuple[int, Mapping[str, str], str]]] = []

    @classmethod
    async def connect(
        cls,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        proxy: str | None = None,
        timeouts: Timeouts = Timeouts(),
        headers: Mapping[str, str] | None = None,
    ) -> "ReplicateClient":
        """A client on the running loop's shared session, with the token found now.

        The token comes from ``api_key``, else the environment; none raises MissingAuthError.
        ``base_url`` defaults to REPLICATE_BASE_URL, else Replicate's API.
        """
        token = find_token(api_key)
        if token is None:
            raise missing_token_error()
        return cls(await shared_session(), token, base_url=base_url or _env_base_url(), proxy=proxy,
                   timeouts=timeouts, headers=headers)

    def __repr__(self) -> str:  # never the token
        return f"ReplicateClient(base_url={self.base_url!r})"

    # -- requests -------------------------------------------------------------------------

    async def input_properties(self, ref: ModelRef) -> dict[str, Any] | None:
        """The model's input schema properties, or None where none can be had."""
        if ref.slug is None:  # a bare version id names no model to ask about
            return None
        key = (self.base_url, str(ref))
        if key not in _schema_cache:
            path = f"/v1/models/{ref.slug}" + (f"/versions/{ref.version}" if ref.version else "")
            try:
                data = await self.request("GET", path)
            except ResponseError as error:
                if error.status == 404:
                    raise
                return None  # a passing failure: use the fallback mapping, ask again next time
            version = data if ref.version else data.get("latest_version")
            schema = version.get("openapi_schema") if isinstance(version, dict) else None
            _schema_cache[key] = input_properties(schema)
        return _schema_cache[key]

    async def create_prediction(self, ref: ModelRef, inputs: dict[str, Any]) -> dict[str, Any]:
        if ref.version:
            body: dict[str, Any] = {"version": str(ref) if ref.slug else ref.version}
            path = "/v1/predictions"
        else:
            body, path = {}, f"/v1/models/{ref.slug}/predictions"
        body.update(input=inputs, stream=True)
        prediction = await self.request("POST", path, json=body)
        if not isinstance(prediction.get("id"), str):
            raise ResponseError(f"Replicate answered without a prediction id: {str(prediction)[:200]}")
        return prediction

    async def get_prediction(self, prediction: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("GET", self._prediction_url(prediction, "get"))

    async def cancel_prediction(self, prediction: Mapping[str, Any]) -> None:
        await self.request("POST", self._prediction_url(prediction, "cancel"))

    async def request(self, method: str, url: str, *, json: Any = None) -> dict[str, Any]:
        """JSON request with bounded retries; raises our errors, never aiohttp's."""
        if url.startswith("/"):
            url = self.base_url + url
        idempotent = method == "GET"
        for attempt in range(_MAX_ATTEMPTS):
            last = attempt == _MAX_ATTEMPTS - 1
            exchange = asyncio.ensure_future(self._exchange(method, url, json))
            try:
                # A POST that is under way when the caller is cancelled may still create
                # something; shielded, it finishes, and the caller can undo what it made.
                status, headers, body = await (exchange if idempotent else asyncio.shield(exchange))
            except asyncio.CancelledError:
                if not idempotent:
                    self.unanswered_posts.append(exchange)
                raise
            except asyncio.TimeoutError:
                if idempotent and not last:
                    continue
                raise ResponseError(
                    f"Replicate did not answer {method} {URL(url).path} within {self.timeouts.idle:g} s. "
                    "Next: try again, or raise the timeout."
                ) from None
            except aiohttp.ClientError as error:
                if idempotent and not last and not isinstance(error, aiohttp.ClientConnectorError):
                    continue
                raise self._connection_error(url, error) from None
            if status < 400:
                return self._json(body, url)
            if not last and (status == 429 or (idempotent and status in (500, 502, 503, 504))):
                await asyncio.sleep(_retry_delay(headers.get("Retry-After"), attempt))
                continue
            title, detail = parse_problem(status, headers.get("Content-Type", ""), body)
            raise self.redact(error_for_status(status, title, detail))
        raise AssertionError("unreachable")  # the loop always returns or raises

    async def _exchange(self, method: str, url: str, json: Any) -> tuple[int, Mapping[str, str], str]:
        """One HTTP request: status, headers and body text."""
        async with self._session.request(
            method, url, json=json, headers=self._headers_for(url), proxy=self.proxy, timeout=self._timeout()
        ) as response:
            return response.status, response.headers.copy(), await response.text(errors="replace")

    # -- the event stream -----------------------------------------------------------------

    async def events(self, prediction: Mapping[str, Any]) -> AsyncIterator[ServerSentEvent]:
        """Events up to and including ``done``, resuming dropped connections by Last-Event-ID.

        Raises StreamLost when the stream cannot be resumed, StreamError when it stalls.
        """
        url = prediction["urls"]["stream"]
        last_id = ""
        for resume in range(_MAX_RESUMES + 1):
            if resume:
                await asyncio.sleep(min(0.2 * 2**resume, 2.0))
            headers = {**self._headers_for(url), "Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with self._session.get(
                    url, headers=headers, proxy=self.proxy, timeout=self._timeout()
                ) as response:
                    await self._check_stream_response(response)
                    decoder = EventDecoder(keep_dataless=True)
                    async for chunk in response.content.iter_any():
                        for event in decoder.feed(chunk):
                            yield event
                            if event.event == "done":
                                return
                        last_id = decoder.last_event_id or last_id
            except aiohttp.ConnectionTimeoutError:
                continue
            except asyncio.TimeoutError:
                raise StreamError(
                    f"No data from the stream for {self.timeouts.idle:g} s: the model stalled. "
                    "Next: try again, or raise the timeout.",
                    prediction_id=prediction.get("id"),
                ) from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, _Retryable):
                continue
        raise StreamLost(f"the event stream broke {_MAX_RESUMES + 1} times before its done event")

    # -- helpers --------------------------------------------------------------------------

    def trusts(self, url: str) -> bool:
        """Whether the token may go to ``url``: the API host, or a Replicate host."""
        host = URL(url).host or ""
        if host == URL(self.base_url).host:
            return True
        return any(host == domain or host.endswith("." + domain) for domain in ("replicate.com", "replicate.net"))

    def _headers_for(self, url: str) -> dict[str, str]:
        headers = dict(self._headers)
        if self.trusts(url):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _prediction_url(self, prediction: Mapping[str, Any], kind: str) -> str:
        url = (prediction.get("urls") or {}).get(kind)
        if isinstance(url, str) and self.trusts(url):
            return url
        suffix = "/cancel" if kind == "cancel" else ""
        return f"{self.base_url}/v1/predictions/{prediction['id']}{suffix}"

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.idle)

    async def _check_stream_response(self, response: aiohttp.ClientResponse) -> None:
        if response.status in (429, 500, 502, 503, 504):
            raise _Retryable
        if response.status == 401 and not self.trusts(str(response.url)):
            raise ResponseError(
                f"The stream host {response.url.host} asked for the API token, which is only sent "
                "to Replicate's own hosts. Next: check REPLICATE_BASE_URL.",
                status=401,
            )
        if response.status >= 400:
            body = await response.text(errors="replace")
            title, detail = parse_problem(response.status, response.headers.get("Content-Type", ""), body)
            raise self.redact(error_for_status(response.status, title, detail))
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            raise ResponseError(f"The stream answered with {content_type or 'no content type'}, not an event stream")

    def _json(self, body: str, url: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ResponseError(f"Replicate answered {URL(url).path} with something that is not a JSON object")
        return data

    def _connection_error(self, url: str, error: aiohttp.ClientError) -> ResponseError:
        origin = URL(url).origin()
        reason = str(error).replace(self._token, "[token]") if self._token else str(error)
        return ResponseError(
            f"Could not reach {origin} ({type(error).__name__}: {reason}). "
            "Next: check the network, the proxy settings and REPLICATE_BASE_URL."
        )

    def redact(self, error: Exception) -> Exception:
        """The error with every copy of the token replaced (a server or a model may echo it)."""
        if self._token and self._token in str(error):
            error.args = (str(error).replace(self._token, "[token]"),)
            for name in ("title", "detail"):
                value = getattr(error, name, None)
                if isinstance(value, str):
                    setattr(error, name, value.replace(self._token, "[token]"))
        return error

    def redact_text(self, text: str) -> str:
        """``text`` with every copy of the token replaced."""
        return text.replace(self._token, "[token]") if self._token else text


class _Retryable(Exception):
    """The stream host answered with a passing failure (429 or 5xx)."""


def _retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait: Retry-After (seconds or an HTTP date), else exponential backoff."""
    delay = 0.5 * 2**attempt
    if retry_after:
        value = retry_after.strip()
        if value.replace(".", "", 1).isdigit():
            delay = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
                delay = when.timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    return min(max(delay, 0.0), _MAX_RETRY_WAIT)
