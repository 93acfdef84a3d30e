"""One reused ``aiohttp.ClientSession`` per event loop, closed when that loop shuts down.

aiohttp sessions are bound to the loop that created them, and a session per request is
"a very bad idea" (aiohttp's docs). There is no "loop is closing" callback, but
``asyncio.run``, ``asyncio.Runner`` and our own background loop all call
``loop.shutdown_asyncgens()``, which closes every started async generator of that loop. A
tiny generator per session, parked at its ``yield``, turns that into a clean
``session.close()``, so nothing is left for a ResourceWarning.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import aiohttp

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
# Strong references: the loop keeps only weak ones to its async generators.
_closers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}


async def shared_session() -> aiohttp.ClientSession:
    """The running loop's session, created on first use."""
    loop = asyncio.get_running_loop()
    _forget_closed_loops()
    session = _sessions.get(loop)
    if session is None or session.closed:
        # trust_env: honour HTTP(S)_PROXY / NO_PROXY and .netrc like other HTTP clients.
        session = aiohttp.ClientSession(trust_env=True)
        _sessions[loop] = session
        closer = _close_at_shutdown(loop, session)
        await closer.__anext__()  # starts it, which registers it with the loop
        _closers[loop] = closer
    return session


async def close_session() -> None:
    """Close the running loop's session now (the next call makes a new one)."""
    loop = asyncio.get_running_loop()
    closer = _closers.pop(loop, None)
    if closer is not None:
        await closer.aclose()  # type: ignore[attr-defined]


async def _close_at_shutdown(
    loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if _sessions.get(loop) is session:
            del _sessions[loop]
        _closers.pop(loop, None)
        await session.close()
        # close() schedules each transport's connection_lost; let it run before the loop
        # closes, or the sockets are reported unclosed (seen on Python 3.10).
        await asyncio.sleep(0)


def _forget_closed_loops() -> None:
    # A loop closed without shutdown_asyncgens() cannot run close() any more; drop our refs.
    for loop in [loop for loop in _sessions if loop.is_closed()]:
        _sessions.pop(loop, None)
        _closers.pop(loop, None)
