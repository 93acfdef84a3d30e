"""Reading an aiohttp response body within limits. I/O helpers, no IPython.

Three things aiohttp does not do for us: stop reading at a size (it inflates gzip as it is
read, so the cap must count what ``read()`` returns); wake a reader whose connection was
closed under it (closing a session closes its connections, but aiohttp 3.14 then drops the
body's reader, and its read timeout, without waking it: that read would wait forever); and
give up a long body that went quiet without a timer per chunk (aiohttp's read timeout
cancels and re-arms one for every chunk: for a stream, a cost per token).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from .errors import ResponseError

_READ_CHUNK = 64 * 1024


async def read_body(response: aiohttp.ClientResponse, limit: int, *, cut: bool) -> bytes:
    """At most ``limit`` bytes of the (decompressed) body: past that, cut it or fail.

    What is not read is never inflated, so this bounds a gzip bomb too.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            if cut:
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            raise ResponseError(f"Replicate answered {response.url.path} with more than {_size(limit)}; "
                                "it was not read further")
        chunks.append(chunk)
    return b"".join(chunks)


# The protocols whose "closed" future we created; each gets one callback that reads it.
_hooked: weakref.WeakSet[Any] = weakref.WeakSet()


@contextmanager
def woken_on_close(response: aiohttp.ClientResponse) -> Iterator[None]:
    """While inside: if the response's connection closes, its body's reader raises at once."""
    protocol = response.connection.protocol if response.connection is not None else None
    closed = protocol.closed if protocol is not None else None
    if closed is None:  # released, or lost already (and then the reader knows)
        yield
        return
    if protocol not in _hooked:
        _hooked.add(protocol)
        closed.add_done_callback(_retrieve)

    def wake(_: object) -> None:
        if not response.content.is_eof():
            response.content.set_exception(aiohttp.ClientConnectionError("the connection was closed"))

    closed.add_done_callback(wake)
    try:
        yield
    finally:
        closed.remove_done_callback(wake)


def _retrieve(future: asyncio.Future[None]) -> None:
    # Nobody else awaits it: read its exception, or asyncio logs it as never retrieved.
    if not future.cancelled():
        future.exception()


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit >= mib else f"{limit // 1024} KiB"


_IDLE_LOOKS = 4  # looks per idle limit: a silence is seen within 1.25 times the limit


@contextmanager
def idle_limit(response: aiohttp.ClientResponse, seconds: float) -> Iterator[None]:
    """While inside: once no byte of the body came for ``seconds``, its reader raises
    ``aiohttp.ServerTimeoutError`` (an ``asyncio.TimeoutError``), as aiohttp's own read
    timeout would.

    aiohttp's read timeout (``sock_read``) still guards the wait for the headers; from here
    on a timer looks at the bytes received a few times per limit instead, and aiohttp's is
    switched off for the rest of this response (every request sets its own again).
    """
    protocol = response.connection.protocol if response.connection is not None else None
    if protocol is None or seconds <= 0:
        yield
        return
    protocol.read_timeout = None  # its timer armed now lapses at the next chunk
    loop = asyncio.get_running_loop()
    body = response.content
    seen, quiet_since = body.total_bytes, loop.time()
    handle: asyncio.TimerHandle | None = None

    def look() -> None:
        nonlocal seen, quiet_since, handle
        now = loop.time()
        if body.total_bytes != seen:
            seen, quiet_since = body.total_bytes, now
        elif now - quiet_since >= seconds:
            if not body.is_eof():
                body.set_exception(aiohttp.ServerTimeoutError(f"no data for {seconds:g} s"))
            handle = None
            return
        handle = loop.call_later(seconds / _IDLE_LOOKS, look)

    handle = loop.call_later(seconds / _IDLE_LOOKS, look)
    try:
        yield
    finally:
        if handle is not None:
            handle.cancel()
