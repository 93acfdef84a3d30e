"""Replicate's HTTP API over aiohttp: requests, retries, cancels, errors and the event stream.

No IPython here. One ``ReplicateClient`` holds the token for one caller; the aiohttp
session it uses is shared per event loop (``sessions.py``). Every read from the network is
bounded in size and time, and every failure of the HTTP or JSON layer leaves this module as
a ``ResponseError`` raised ``from None``: aiohttp's exceptions and frames hold the request,
Authorization header included, and ``%xmode Verbose`` would print them.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from .answers import (
    MAX_ERROR_BODY_BYTES,
    MAX_JSON_BYTES,
    parse_json_object,
    retry_delay,
    shorten,
)
from .bodies import idle_limit, read_body, woken_on_close
from .cancels import CancelOutcome, InFlight
from .environment import (
    DEFAULT_BASE_URL,
    base_url_problem,
    find_token,
    may_send_token,
    same_origin,
)
from .environment import base_url as _env_base_url
from .errors import (
    InvalidRequestError,
    ReplicateMagicError,
    ResponseError,
    StreamError,
    error_for_status,
    missing_token_error,
    parse_problem,
)
from .inputs import ModelRef
from .limiter import CreateLimiter, create_limiter
from .prediction import Prediction
from .schemas import ModelSchema, SchemaCache, default_schemas
from .sessions import inflight, new_session, proxy_for, shared_session
from .settings import Timeouts
from .sse import EventDecoder, EventTooLarge, ServerSentEvent

log = logging.getLogger(__name__)
USER_AGENT = "replicate-magic/0.1"
_MAX_ATTEMPTS = 4  # one try and three retries, for 429 (any method) and 5xx (GET only)
_MAX_RESUMES = 5  # reconnects of one event stream with Last-Event-ID
_RETRYABLE = (429, 500, 502, 503, 504)
# A cancel is idempotent, so it is retried on 5xx and dropped connections too, within a budget.
_CANCEL_TRIES = 3
_CANCEL_BUDGET = 5.0  # seconds for all tries
_CANCEL_TRY = 2.0  # seconds for one try
_SLOW_UPLOAD_RATE = 250_000  # bytes a second an upload is given time for, beyond the JSON limit


@dataclass(frozen=True)
class RateLimitWait:
    """Replicate answered 429: the client waits ``seconds``, then makes try ``next_try``."""

    seconds: float
    next_try: int
    tries: int

    def __str__(self) -> str:
        seconds = round(self.seconds, 1)
        return f"rate limited by Replicate; retrying in {seconds:g} s (try {self.next_try} of {self.tries})"


OnWait = Callable[[RateLimitWait], None]  # told as each wait starts, so a long pause is never silent


class StreamLost(Exception):
    """The event stream could not be resumed; the caller may poll instead."""


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer, read within limits; ``body`` has the token redacted."""

    status: int
    content_type: str
    retry_after: str | None
    body: str


class _Passing(Exception):
    """A failure worth another try for an idempotent request: a timeout, a dropped connection."""

    def __init__(self, error: ResponseError, *, unreachable: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.unreachable = unreachable  # nothing answered at all: retrying a GET will not help


class _MalformedCreate(Exception):
    """The create made a prediction (its id is valid) but answered in a shape we cannot use."""

    def __init__(self, error: ResponseError, outcome: CancelOutcome) -> None:
        super().__init__(str(error))
        self.error = error
        self.outcome = outcome


class _Retryable(Exception):
    """The stream host answered with a passing failure (429 or 5xx)."""


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
        schemas: SchemaCache | None = None,
        create_rate: float | None = None,
    ) -> None:
        self.base_url = base_url.strip().rstrip("/")
        self.create_rate = create_rate  # creates a minute for this kernel (limiter.py); None: the default
        problem = base_url_problem(self.base_url)
        if problem:
            raise InvalidRequestError(f"The API address cannot be used: {problem}. Next: check REPLICATE_BASE_URL.")
        if proxy and urlsplit(proxy).scheme not in ("http", "https"):
            shown = urlsplit(proxy)._replace(netloc=urlsplit(proxy).netloc.rpartition("@")[2]).geturl()
            raise InvalidRequestError(f"Proxy {shown} is not an http:// or https:// proxy")
        self._session = session
        self._token = token
        self.proxy = proxy or None
        self.timeouts = timeouts
        self.schemas = default_schemas if schemas is None else schemas
        # The token is the only credential, and it goes only where may_send_token() allows.
        extra = {k: v for k, v in (headers or {}).items() if k.lower() not in ("authorization", "cookie")}
        self._headers = {"User-Agent": USER_AGENT, **extra}

    @classmethod
    async def connect(
        cls,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        proxy: str | None = None,
        timeouts: Timeouts = Timeouts(),
        headers: Mapping[str, str] | None = None,
        schemas: SchemaCache | None = None,
        create_rate: float | None = None,
    ) -> ReplicateClient:
        """A client on the running loop's shared session, with the token found now.

        The token comes from ``api_key``, else the environment; none raises MissingAuthError.
        ``base_url`` defaults to REPLICATE_BASE_URL, else Replicate's API. ``schemas``
        defaults to the process's ``schemas.default_schemas``.
        """
        token = find_token(api_key)
        if token is None:
            raise missing_token_error()
        return cls(await shared_session(), token, base_url=base_url or _env_base_url(), proxy=proxy,
                   timeouts=timeouts, headers=headers, schemas=schemas, create_rate=create_rate)

    def __repr__(self) -> str:  # never the token
        return f"ReplicateClient(base_url={self.base_url!r})"

    # -- predictions ----------------------------------------------------------------------

    async def model_schema(self, ref: ModelRef, *, on_wait: OnWait | None = None) -> ModelSchema | None:
        """The model's schema (cached, fetched, a deployment's release's): ``model_lookup.model_schema``."""
        from .model_lookup import model_schema

        return await model_schema(self, ref, on_wait=on_wait)

    async def create_prediction(
        self, ref: ModelRef, inputs: dict[str, Any], *, on_wait: OnWait | None = None,
    ) -> Prediction:
        """Create it; only 429 is retried, since a failed POST may still have made something.

        If the caller is cancelled before the answer arrives, the request runs on in the
        background and whatever it made is cancelled as soon as the answer comes.
        """
        if ref.deployment:  # no version: the deployment runs its current release
            body: dict[str, Any] = {}
            path = f"/v1/deployments/{ref.slug}/predictions"
        elif ref.version:
            body = {"version": str(ref) if ref.slug else ref.version}
            path = "/v1/predictions"
        else:
            body, path = {}, f"/v1/models/{ref.slug}/predictions"
        body.update(input=inputs, stream=True)
        # Every create of the kernel keeps one pace, and a 429 pauses them all (limiter.py).
        limiter = create_limiter(self.base_url, self.create_rate)
        answer = await self._answered("POST", self.base_url + path, body, adopt=True, on_wait=on_wait,
                                      limiter=limiter)
        try:
            return await self._created(answer)
        except _MalformedCreate as malformed:
            error, outcome = malformed.error, malformed.outcome
            raise ResponseError(f"{error} ({outcome.message()})", prediction_id=error.prediction_id) from None

    async def get_prediction(self, prediction: Prediction, *, on_wait: OnWait | None = None) -> Prediction:
        url = self._api_url(prediction, "get")
        return Prediction.parse(await self.request("GET", url, on_wait=on_wait))

    def ended(self, prediction: Prediction) -> None:
        """The prediction was seen to end on Replicate: nothing to cancel any more."""
        self._registry().ended(prediction.id)

    async def cancel_prediction(self, prediction: Prediction) -> CancelOutcome:
        """Cancel it on Replicate and say whether that worked; never raises a ResponseError.

        Retried on 429, 5xx, timeouts and dropped connections (3 tries within about 5 s). The
        cancel runs as a task of the loop's registry: cancelling the caller does not stop it.
        """
        cancel = self._registry().cancel(prediction.id, lambda: self._send_cancel(prediction))
        return await asyncio.shield(cancel)

    async def upload_file(
        self, data: bytes, filename: str, content_type: str, *, on_wait: OnWait | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/files``: the bytes as the multipart field ``content`` (with ``filename``
        and ``type``); the created file as Replicate answers it (201; ``urls.get`` is what an
        input takes). Only 429 is retried, as for any POST.
        """
        def form() -> aiohttp.FormData:
            built = aiohttp.FormData()
            # A BytesIO, not bytes: aiohttp streams it in chunks instead of warning about a large body.
            built.add_field("content", io.BytesIO(data), filename=filename, content_type=content_type)
            built.add_field("filename", filename)
            built.add_field("type", content_type)
            return built

        # The JSON time limit, plus time for the body at a slow uplink's pace: 100 MB takes minutes.
        total = self.timeouts.total + len(data) / _SLOW_UPLOAD_RATE
        answer = await self._answered("POST", self.base_url + "/v1/files", None, form=form, total=total,
                                      on_wait=on_wait)
        return parse_json_object(answer.body, "POST /v1/files")

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, method: str, url: str, *, json: Any = None, on_wait: OnWait | None = None,
    ) -> dict[str, Any]:
        """JSON request with bounded retries; raises our errors, never aiohttp's."""
        if url.startswith("/"):
            url = self.base_url + url
        answer = await self._answered(method, url, json, on_wait=on_wait)
        return parse_json_object(answer.body, f"{method} {urlsplit(url).path}")

    async def _answered(
        self, method: str, url: str, json: Any, *, adopt: bool = False, on_wait: OnWait | None = None,
        form: Callable[[], aiohttp.FormData] | None = None, total: float | None = None,
        limiter: CreateLimiter | None = None,
    ) -> _Answer:
        """A 2xx answer, after retries: 429 for any method, 5xx and timeouts for GET only.

        ``on_wait`` hears of every wait for a rate limit as it starts. ``form`` makes a
        multipart body in place of ``json``, a new one for each try. With a ``limiter``, each
        try waits for its turn, and a 429 pauses every request that shares the limiter.
        """
        idempotent = method == "GET"
        for attempt in range(_MAX_ATTEMPTS):
            last = attempt == _MAX_ATTEMPTS - 1
            if limiter is not None:
                await limiter.acquire()
            try:
                answer = await (self._adoptable(method, url, json) if adopt
                                else self._exchange(method, url, json, form=form, total=total))
            except _Passing as failure:
                if idempotent and not last and not failure.unreachable:
                    continue
                raise failure.error from None
            if answer.status < 300:
                return answer
            if not last and (answer.status == 429 or (idempotent and answer.status in _RETRYABLE)):
                delay = retry_delay(answer.retry_after, attempt)
                if answer.status == 429 and on_wait is not None:
                    on_wait(RateLimitWait(delay, attempt + 2, _MAX_ATTEMPTS))
                if answer.status == 429 and limiter is not None:
                    limiter.pause(delay)  # the next acquire() waits it out, with every other worker
                    continue
                await asyncio.sleep(delay)
                continue
            raise self._http_error(answer)
        raise AssertionError("unreachable")  # the loop always returns or raises

    async def _adoptable(self, method: str, url: str, json: Any) -> _Answer:
        """The exchange, shielded: if the caller is cancelled, the registry waits for its answer."""
        exchange = asyncio.ensure_future(self._exchange(method, url, json))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            self._registry().adopt(self._settle_stopped_create(exchange))
            raise

    async def _exchange(
        self, method: str, url: str, json: Any, *, total: float | None = None, limit: int = MAX_JSON_BYTES,
        cut: bool = False, session: aiohttp.ClientSession | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> _Answer:
        """One HTTP request: status, the headers we use, and the body, all within limits.

        A body past ``limit`` fails the request, unless ``cut`` (or the request failed: an
        error page is read only as far as a message needs).
        """
        total = self.timeouts.total if total is None else total
        session = session or self._session
        if session.closed:
            raise ResponseError(f"The HTTP session was closed, so {method} {urlsplit(url).path} was not sent.")
        options = self._request_options(url, aiohttp.ClientTimeout(
            total=total, sock_connect=self.timeouts.connect, sock_read=self.timeouts.idle))
        try:
            body = None if form is None else form()
            async with session.request(method, url, json=json, data=body, **options) as response:
                with woken_on_close(response):
                    failed = response.status >= 300
                    raw = await read_body(response, MAX_ERROR_BODY_BYTES if failed else limit, cut=failed or cut)
                return _Answer(response.status, response.headers.get("Content-Type", ""),
                               response.headers.get("Retry-After"), self.redact_text(raw.decode("utf-8", "replace")))
        except ReplicateMagicError:
            raise
        except asyncio.TimeoutError:
            raise _Passing(ResponseError(
                f"Replicate did not answer {method} {urlsplit(url).path} within {total:g} s. "
                "Next: try again, or raise the timeout.")) from None
        except aiohttp.ClientConnectorError as error:
            raise _Passing(self._connection_error(url, error), unreachable=True) from None
        except (aiohttp.ClientError, ValueError) as error:  # ValueError: aiohttp's view of a bad header
            raise _Passing(self._connection_error(url, error)) from None

    # -- creates and cancels --------------------------------------------------------------

    async def _created(self, answer: _Answer) -> Prediction:
        """The created prediction, registered as running; malformed but with an id: cancelled."""
        data = parse_json_object(answer.body, "the create")
        try:
            prediction = Prediction.parse(data)
        except ResponseError as error:
            if error.prediction_id is None:
                raise
            outcome = await self.cancel_prediction(Prediction(error.prediction_id))
            raise _MalformedCreate(error, outcome) from None
        self._registry().opened(prediction.id, lambda: self._send_cancel(prediction))
        return prediction

    async def _settle_stopped_create(self, exchange: asyncio.Future[_Answer]) -> CancelOutcome | None:
        """Wait for a stopped create's answer, however long it takes; cancel what it made."""
        try:
            answer = await exchange
        except (_Passing, ReplicateMagicError) as failure:
            return CancelOutcome(None, False, str(failure))
        if answer.status >= 300:  # a 4xx made nothing; after a 5xx nobody can tell
            return CancelOutcome(None, answer.status < 500, f"the create was answered with HTTP {answer.status}")
        try:
            prediction = await self._created(answer)
        except _MalformedCreate as malformed:
            return malformed.outcome
        except ResponseError as error:
            return CancelOutcome(None, False, str(error))
        return await self.cancel_prediction(prediction)

    async def _send_cancel(self, prediction: Prediction) -> CancelOutcome:
        if not self._session.closed:
            return await self._try_cancel(prediction, self._session)
        # Closed under us (by someone else, or at shutdown): the cancel must still go out.
        async with new_session() as once:
            return await self._try_cancel(prediction, once)

    async def _try_cancel(self, prediction: Prediction, session: aiohttp.ClientSession) -> CancelOutcome:
        prediction_id = prediction.id
        url = self._api_url(prediction, "cancel")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCEL_BUDGET
        reason = "no time was left to send it"
        for attempt in range(_CANCEL_TRIES):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                # Only the status matters: the body (the whole prediction) is read only a little way.
                answer = await self._exchange("POST", url, None, total=min(remaining, _CANCEL_TRY),
                                              limit=MAX_ERROR_BODY_BYTES, cut=True, session=session)
            except _Passing as failure:
                reason = str(failure.error)
            except ReplicateMagicError as error:
                return CancelOutcome(prediction_id, False, str(error))
            else:
                if answer.status < 300:
                    return CancelOutcome(prediction_id, True)
                reason = str(self._http_error(answer))
                if answer.status not in _RETRYABLE:
                    return CancelOutcome(prediction_id, False, reason)
            wait = retry_delay(None, attempt) * 0.5
            await asyncio.sleep(max(0.0, min(wait, deadline - loop.time())))
        return CancelOutcome(prediction_id, False, reason)

    @staticmethod
    def _registry() -> InFlight:
        return inflight()  # the running loop's: a client is used on one loop, like its session

    # -- the event stream -----------------------------------------------------------------

    async def events(self, prediction: Prediction) -> AsyncGenerator[ServerSentEvent, None]:
        """Events up to and including ``done``, resuming dropped connections by Last-Event-ID.

        Raises StreamLost when the stream cannot be resumed (or the prediction names none),
        StreamError when it stalls, grows past the decoder's limits, or loses its HTTP session.
        """
        url, prediction_id = prediction.urls.stream, prediction.id
        if url is None:
            raise StreamLost("the prediction names no event stream")
        decoder = EventDecoder(keep_dataless=True)
        for resume in range(_MAX_RESUMES + 1):
            if resume:
                await asyncio.sleep(min(0.2 * 2**resume, 2.0))
            session = self._session
            if session.closed:
                raise StreamError("The HTTP session was closed while the reply streamed; the stream was given up.",
                                  prediction_id=prediction_id)
            headers = {**self._headers_for(url), "Accept": "text/event-stream", "Cache-Control": "no-store"}
            if decoder.last_event_id:
                headers["Last-Event-ID"] = decoder.last_event_id
            options = self._request_options(url, aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.idle), headers)
            try:
                async with session.get(url, **options) as response:
                    await self._check_stream_response(response)
                    with woken_on_close(response), idle_limit(response, self.timeouts.idle):
                        async for chunk in response.content.iter_any():
                            for event in decoder.feed(chunk):
                                yield event
                                if event.event == "done":
                                    return
            except EventTooLarge as error:
                raise StreamError(f"The stream was given up: {error}.", prediction_id=prediction_id) from None
            except aiohttp.ConnectionTimeoutError:
                pass  # try again
            except asyncio.TimeoutError:
                raise StreamError(
                    f"No data from the stream for {self.timeouts.idle:g} s: the model stalled. "
                    "Next: try again, or raise the timeout.",
                    prediction_id=prediction_id,
                ) from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, _Retryable):
                pass  # dropped: resume
            except (aiohttp.ClientError, ValueError) as error:
                raise StreamError(str(self._connection_error(url, error)), prediction_id=prediction_id) from None
            decoder.close()  # a new connection starts a new stream; the last event id is kept
        raise StreamLost(f"the event stream broke {_MAX_RESUMES + 1} times before its done event")

    async def _check_stream_response(self, response: aiohttp.ClientResponse) -> None:
        if response.status in _RETRYABLE:
            raise _Retryable
        if response.status == 401 and not self.trusts(str(response.url)):
            raise ResponseError(
                f"The stream host {response.url.host} asked for the API token, which is only sent over https "
                "to the API and Replicate's own hosts (or to the API's host, when that is this machine). "
                "Next: check REPLICATE_BASE_URL.",
                status=401,
            )
        if response.status >= 300:
            raw = await read_body(response, MAX_ERROR_BODY_BYTES, cut=True)
            text = self.redact_text(raw.decode("utf-8", "replace"))
            title, detail = parse_problem(response.status, response.headers.get("Content-Type", ""), text)
            raise self.redact(error_for_status(response.status, title, detail))
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            raise ResponseError(
                f"The stream answered with {shorten(content_type, 80) or 'no content type'}, not an event stream")

    # -- helpers --------------------------------------------------------------------------

    def trusts(self, url: str) -> bool:
        """Whether the token may go to ``url`` (see ``environment.may_send_token``)."""
        return may_send_token(url, self.base_url)

    def _headers_for(self, url: str) -> dict[str, str]:
        headers = dict(self._headers)
        if self.trusts(url):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _request_options(
        self, url: str, timeout: aiohttp.ClientTimeout, headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        # No redirects: Replicate's API does not use them, and each one is a new place the
        # token might go. The proxy is ours to choose (the session trusts no environment).
        return {"headers": headers if headers is not None else self._headers_for(url),
                "proxy": self.proxy or proxy_for(url), "timeout": timeout, "allow_redirects": False}

    def _api_url(self, prediction: Prediction, kind: Literal["get", "cancel"]) -> str:
        """``urls.get`` / ``urls.cancel`` when on the API's own origin, else built from the id."""
        url = prediction.urls.get if kind == "get" else prediction.urls.cancel
        if url is not None and same_origin(url, self.base_url):
            return url
        suffix = "/cancel" if kind == "cancel" else ""
        return f"{self.base_url}/v1/predictions/{prediction.id}{suffix}"

    def _http_error(self, answer: _Answer) -> Exception:
        title, detail = parse_problem(answer.status, answer.content_type, answer.body)  # body: redacted
        return self.redact(error_for_status(answer.status, title, detail))

    def _connection_error(self, url: str, error: Exception) -> ResponseError:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        reason = shorten(self.redact_text(str(error)), 200)
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
