"""`Emulator`: runs the API and stream servers on their own event loop in a daemon thread.

A private loop makes the emulator usable from sync tests, from async tests running
another loop, and next to a Jupyter kernel, without sharing anyone's loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping
from types import TracebackType

from aiohttp import web

from .api import make_api_app
from .delivery import make_file_app
from .faults import Faults
from .files import FileStore
from .hosts import WILDCARD_HOSTS
from .limits import (
    DEFAULT_MAX_PREDICTIONS,
    DEFAULT_MAX_RECORDED_BODY,
    DEFAULT_MAX_REQUESTS,
    PredictionStore,
    RecentList,
)
from .models import MODELS
from .runs import publish
from .state import EmulatorState, RecordedRequest
from .stream import make_stream_app
from .throttle import TokenBucket
from .wire import LINE_ENDINGS

__all__ = ["Emulator"]

_SHUTDOWN_TIMEOUT = 2.0  # seconds granted to open handlers once streams were told to end


def _url(host: str, port: int) -> str:
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"  # a wildcard bind is reachable on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Emulator:
    """An offline Replicate: API on one port, SSE streams on another, output files on a third
    (as on the real service, where they are api.replicate.com, a streaming host and
    replicate.delivery).

    Output files stay `file_lifetime` seconds (an hour on Replicate), Files API uploads
    `upload_lifetime` (a day); images are the real size times `image_scale`. `deployments` maps
    ``"owner/name"`` deployments to emulated models (None: a deployment with no current release).
    The servers answer only requests whose ``Host`` names the address they listen on
    (``127.0.0.1:PORT``, ``localhost:PORT``...; others get 403), so a web page using DNS
    rebinding cannot read what a notebook sends.
    Memory stays bounded: `requests` keeps the `max_requests` newest requests, with at most
    `max_recorded_body` bytes of each body; `predictions` keeps the `max_predictions` newest
    (fewer if their create bodies pass 100 MiB in total); bodies over 10 MiB are refused with
    413 (100 MiB for Files API uploads; see limits.py); each file store keeps at most 1 GiB.

    Creates (all three routes: model, version and deployment) are limited like Replicate's,
    to `create_rate_limit` a minute (600, as documented) with bursts: a token bucket holding
    `create_burst` requests (default: a minute's worth, which the real ``ratelimit-remaining``
    599, 598... of a first burst show), refilled at `create_rate_limit` / 60 a second. Over it
    a create gets 429 ``{"detail": "Request was throttled. Expected available in N second(s).",
    "status": 429}`` with ``Retry-After: N`` (whole seconds, at least 1) and creates nothing;
    ``ratelimit-remaining`` shows the bucket. None or 0: no limit. `create_times` and
    `throttled` keep when creates passed the limit and when they got 429 (``time.monotonic()``);
    `in_flight` / `peak_in_flight` count predictions from create until terminal. Markers in a
    prompt (``[[emulator:fail]]``...; see the markers module) make that one prediction misbehave.
    """

    def __init__(
        self,
        token: str | None = None,
        tokens_per_second: float = 0.0,
        cold_start: float = 0.0,
        line_ending: str = "\n",
        split_writes: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_port: int = 0,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_predictions: int = DEFAULT_MAX_PREDICTIONS,
        max_recorded_body: int = DEFAULT_MAX_RECORDED_BODY,
        file_port: int = 0,
        file_lifetime: float = 3600.0,
        upload_lifetime: float = 24 * 3600.0,
        image_scale: float = 0.25,
        deployments: Mapping[str, str | None] | None = None,
        create_rate_limit: float | None = 600,
        create_burst: int | None = None,
    ) -> None:
        if line_ending not in LINE_ENDINGS:
            raise ValueError(f"line_ending must be one of {LINE_ENDINGS!r}")
        if token is not None and not token:
            raise ValueError("token must be non-empty (or None to accept any token)")
        if max_requests < 1 or max_predictions < 1:
            raise ValueError("max_requests and max_predictions must be at least 1")
        if max_recorded_body < 0:
            raise ValueError("max_recorded_body must be 0 or more")
        if file_lifetime < 0 or upload_lifetime < 0 or not 0 < image_scale <= 4:
            raise ValueError("lifetimes must be 0 or more and image_scale in (0, 4]")
        for name, model in (deployments or {}).items():
            _check_deployment(name, model)
        bucket = _create_bucket(create_rate_limit, create_burst)
        self._state = EmulatorState(
            token=token, tokens_per_second=tokens_per_second, cold_start=cold_start,
            line_ending=line_ending, split_writes=split_writes, bind_host=host,
            max_recorded_body=max_recorded_body, requests=RecentList(max_requests),
            cancels=RecentList(max_requests), predictions=PredictionStore(max_predictions),
            file_lifetime=file_lifetime, upload_lifetime=upload_lifetime, image_scale=image_scale,
            deployments=dict(deployments or {}), create_bucket=bucket,
        )
        self._host, self._port, self._stream_port, self._file_port = host, port, stream_port, file_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._startup_error: BaseException | None = None
        self._cancels_taken = 0

    # -- public API ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self._state.base_url

    @property
    def stream_base(self) -> str:
        return self._state.stream_base

    @property
    def file_base(self) -> str:
        """The file host's URL (output files are served under it, without a token)."""
        return self._state.file_base

    @property
    def requests(self) -> RecentList[RecordedRequest]:
        """The newest requests the servers received (``.dropped`` counts older ones let go);
        ``server`` is "api", "stream" or "files"."""
        return self._state.requests

    @property
    def files(self) -> FileStore:
        """Output files on the file host, by path."""
        return self._state.outputs

    @property
    def uploads(self) -> FileStore:
        """Files API uploads, by id."""
        return self._state.uploads

    @property
    def file_host_authorizations(self) -> int:
        """How many file-host requests carried an Authorization header (a client should send none)."""
        return self._state.file_authorizations

    def add_file(self, name: str, data: bytes, content_type: str, delay: float | None = None) -> str:
        """Serve `data` on the file host (for `file_lifetime`); its URL. `delay`: as
        ``Faults.file_delay``, seconds each download waits before the body."""
        return publish(self._state, name, content_type, data, Faults(file_delay=delay))

    def forget_files(self) -> None:
        """The file host forgets every output file now: their URLs answer 404."""
        self._state.outputs.clear()

    @property
    def cancels(self) -> RecentList[str]:
        return self._state.cancels

    @property
    def predictions(self) -> PredictionStore:
        """The newest predictions by id, in creation order."""
        return self._state.predictions

    @property
    def create_rate_limit(self) -> float | None:
        """Creates allowed a minute (None: unlimited)."""
        bucket = self._state.create_bucket
        return bucket.per_minute if bucket is not None else None

    @property
    def create_burst(self) -> int | None:
        """Creates the bucket holds at most: how many may come at once (None: unlimited)."""
        bucket = self._state.create_bucket
        return bucket.burst if bucket is not None else None

    @property
    def create_times(self) -> RecentList[float]:
        """``time.monotonic()`` of each create that passed the rate limit (the newest 100,000), in
        order; whether it then created a prediction or not (an invalid one still counts, as a
        throttle in front of the handler counts it)."""
        return self._state.create_times

    @property
    def throttled(self) -> RecentList[float]:
        """``time.monotonic()`` of each create answered 429, by the limit or by ``Faults.rate_limit``."""
        return self._state.throttled

    @property
    def in_flight(self) -> int:
        """Predictions created and not yet succeeded, failed, canceled or aborted."""
        return self._state.in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most predictions in flight at once so far."""
        return self._state.peak_in_flight

    def deploy(self, name: str, model: str | None) -> None:
        """Make ``model`` the current release of deployment ``name`` (created if new; None: no release)."""
        _check_deployment(name, model)
        self._state.deployments[name] = model

    def inject(self, faults: Faults) -> None:
        """Add faults: counters for the next requests, the rest for the next prediction."""
        self._state.faults.inject(faults)

    def wait_for_cancel(self, timeout: float = 5.0) -> str:
        """Block until a cancel request arrives (or one not yet returned did); its id."""
        cond, cancels = self._state.cancel_seen, self._state.cancels

        def untaken() -> int:  # index of the first cancel not yet returned that is still kept
            return max(self._cancels_taken - cancels.dropped, 0)

        with cond:
            if not cond.wait_for(lambda: len(cancels) > untaken(), timeout):
                raise TimeoutError(f"no cancel request within {timeout} s")
            index = untaken()
            self._cancels_taken = cancels.dropped + index + 1  # counted over all cancels ever seen
            return cancels[index]

    def start(self) -> Emulator:
        """Start both servers; returns once both ports listen."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="replicate-emulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def close(self) -> None:
        """Cancel generations, end streams, stop both servers and the loop."""
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout=_SHUTDOWN_TIMEOUT + 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- loop thread --------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # e.g. port in use: re-raised in start()
            self._startup_error = exc
            loop.run_until_complete(self._cleanup_runners())
        else:
            ready.set()
            loop.run_forever()
        finally:
            self._close_loop(loop)
            ready.set()

    async def _startup(self) -> None:
        self._state.closing = False  # start() after close() serves again (on new ports if 0)
        api = web.AppRunner(make_api_app(self._state), access_log=None,
                            shutdown_timeout=_SHUTDOWN_TIMEOUT)
        # Cancel a stream handler when its client disconnects, so idle streams don't linger.
        stream = web.AppRunner(make_stream_app(self._state), access_log=None,
                               shutdown_timeout=_SHUTDOWN_TIMEOUT, handler_cancellation=True)
        files = web.AppRunner(make_file_app(self._state), access_log=None,
                              shutdown_timeout=_SHUTDOWN_TIMEOUT, handler_cancellation=True)
        for runner, port in ((api, self._port), (stream, self._stream_port), (files, self._file_port)):
            self._runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, self._host, port).start()
        self._state.base_url = _url(self._host, api.addresses[0][1])
        self._state.stream_base = _url(self._host, stream.addresses[0][1])
        self._state.file_base = _url(self._host, files.addresses[0][1])

    async def _shutdown(self) -> None:
        self._state.closing = True
        for pred in list(self._state.predictions.values()):
            pred.shutdown()
        await self._cleanup_runners()
        tasks = [p.task for p in self._state.predictions.values() if p.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cleanup_runners(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _create_bucket(per_minute: float | None, burst: int | None) -> TokenBucket | None:
    if per_minute is None or per_minute == 0:
        return None
    if not (math.isfinite(per_minute) and per_minute > 0):
        raise ValueError("create_rate_limit must be a positive number of creates a minute (None or 0: no limit)")
    if burst is None:
        burst = max(1, math.ceil(per_minute))
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError("create_burst must be a whole number of 1 or more")
    return TokenBucket(per_minute, burst)


def _check_deployment(name: str, model: str | None) -> None:
    if name.count("/") != 1 or (model is not None and model not in MODELS):
        raise ValueError(f"deployment {name!r} -> {model!r}: need 'owner/name' -> an emulated model")
