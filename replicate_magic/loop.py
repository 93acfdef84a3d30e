"""A private asyncio loop on a daemon thread: how a synchronous magic runs async code.

IPython's ``%%script`` does the same. Measured on ipykernel 6.29 and 7.4 (see DESIGN.md):
the kernel keeps answering other requests while a stream runs, an interrupt reaches the
coroutine in milliseconds, and it works even where nest_asyncio was applied. No I/O of its
own and no IPython.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")
_SLICE = 0.1  # seconds the caller blocks at a time, so Ctrl-C / SIGINT is seen promptly
_CLEANUP_WAIT = 5.0  # seconds an interrupted call waits for its coroutine's cleanup


class BackgroundLoop:
    def __init__(self, name: str = "replicate-magic-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop and return at once (the panel's way)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it (the magic's way).

        KeyboardInterrupt cancels the coroutine, waits for its cleanup (so a remote cancel
        gets sent), then propagates.
        """
        finished = threading.Event()  # future.result() returns early on cancel; this does not

        async def tracked() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = self.submit(tracked())
        try:
            while True:
                try:
                    return future.result(timeout=_SLICE)
                except concurrent.futures.TimeoutError:
                    continue
        except KeyboardInterrupt:
            future.cancel()
            finished.wait(_CLEANUP_WAIT)
            raise

    def stop(self) -> None:
        """Close async generators (and so the HTTP session), then stop the thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(_CLEANUP_WAIT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_CLEANUP_WAIT)
        if not loop.is_running():
            loop.close()


_shared: BackgroundLoop | None = None
_shared_lock = threading.Lock()


def shared_loop() -> BackgroundLoop:
    """The one loop the magic, the panel and the CLI share (one aiohttp session with it)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = BackgroundLoop()
            atexit.register(_shared.stop)
        return _shared
