"""Per event loop: one reused ``aiohttp.ClientSession`` and the predictions in flight.

aiohttp sessions are bound to the loop that created them, and a session per request is
"a very bad idea" (aiohttp's docs). There is no "loop is closing" callback, but
``asyncio.run``, ``asyncio.Runner`` and our own background loop all call
``loop.shutdown_asyncgens()``, which closes every started async generator of that loop. A
tiny generator per session, parked at its ``yield``, turns that into: cancel whatever
predictions are still open (``InFlight.drain``), then ``session.close()``, so nothing bills
after the loop is gone and nothing is left for a ResourceWarning.

The session does not trust the environment (``trust_env=False``): that would also read
``~/.netrc``, whose ``default`` entry breaks every request. Proxies come from the
environment per request instead (``proxy_for``), never for this machine's own addresses.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from .cancels import InFlight
from .environment import is_loopback
from .errors import InvalidRequestError

DRAIN_WAIT = 4.0  # seconds a closing session waits for the cancels of what is still running


@dataclass
class _LoopState:
    inflight: InFlight = field(default_factory=InFlight)
    session: aiohttp.ClientSession | None = None
    # A strong reference: the loop keeps only weak ones to its async generators.
    closer: AsyncGenerator[None, None] | None = None


_states: dict[asyncio.AbstractEventLoop, _LoopState] = {}


def inflight() -> InFlight:
    """The running loop's registry of predictions not seen to end."""
    return _state().inflight


async def shared_session() -> aiohttp.ClientSession:
    """The running loop's session, created on first use (and again after it was closed)."""
    state = _state()
    if state.session is None or state.session.closed:
        session = new_session()
        closer = _close_at_shutdown(state, session)
        await closer.__anext__()  # starts it, which registers it with the loop
        state.session, state.closer = session, closer
    return state.session


_CONNECTIONS = 1200  # streams of a full batch, their creates and metrics requests, and the panel's


def new_session() -> aiohttp.ClientSession:
    """A session as ours are made; the caller closes it (``shared_session`` is the usual way)."""
    # No cookies: nothing we talk to needs them, and none should carry from host to host.
    # A stream holds its connection for its whole length: aiohttp's default of 100 at once
    # would queue the rest of a batch (at most 256 in flight) behind them.
    connector = aiohttp.TCPConnector(limit=_CONNECTIONS)
    return aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), connector=connector)


async def close_session() -> None:
    """Cancel what is still running, then close the running loop's session (the next call makes a new one)."""
    state = _states.get(asyncio.get_running_loop())
    if state is not None and state.closer is not None:
        await state.closer.aclose()


def proxy_for(url: str) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for ``url``, unless NO_PROXY or loopback says not."""
    parts = urlsplit(url)
    if not parts.hostname or is_loopback(parts.hostname):
        return None  # this machine: never through a proxy
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return None
    if urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2]):  # NO_PROXY, by host or host:port
        return None
    if urlsplit(proxy).scheme not in ("http", "https"):
        raise InvalidRequestError(
            f"The {parts.scheme.upper()}_PROXY variable names {_without_userinfo(proxy)}, which is not an "
            "http:// or https:// proxy")
    return proxy


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    _forget_closed_loops()
    return _states.setdefault(loop, _LoopState())


async def _close_at_shutdown(state: _LoopState, session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        # Cancel first, while the session can still send the cancels.
        await state.inflight.drain(DRAIN_WAIT)
        if state.session is session:
            state.session = state.closer = None
            if state.inflight.idle:  # forget the loop (it may be closing); a new state is made on demand
                _states.pop(asyncio.get_running_loop(), None)
        await session.close()
        # close() schedules each transport's connection_lost; let it run before the loop
        # closes, or the sockets are reported unclosed (seen on Python 3.10).
        await asyncio.sleep(0)


def _forget_closed_loops() -> None:
    # A loop closed without shutdown_asyncgens() cannot run close() any more; drop our refs.
    for loop in [loop for loop in _states if loop.is_closed()]:
        del _states[loop]
