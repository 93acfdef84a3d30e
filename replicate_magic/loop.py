"""A private asyncio loop on a daemon thread: how a synchronous magic runs async code.

IPython's ``%%script`` does the same. Measured on ipykernel 6.29 and 7.4 (see DESIGN.md):
the kernel keeps answering other requests while a stream runs, an interrupt reaches the
coroutine in milliseconds, and it works even where nest_asyncio was applied. No I/O of its
own and no IPython.

The thread survives what would otherwise end it: a task that raises SystemExit or
KeyboardInterrupt stops ``run_forever()``, which then simply runs again; a thread that ends
anyway (someone stopped the loop) is noticed and replaced, so no later call waits forever.
``stop()`` cancels the work it was given, lets that work cancel its predictions, and only
then closes async generators (which drains the cancels still running and closes the HTTP
session); every step is bounded in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_SLICE = 0.1  # seconds the caller blocks at a time, so Ctrl-C / SIGINT is seen promptly
_CLEANUP_WAIT = 6.0  # seconds an interrupted call waits for its cleanup (a cancel has 5 s to get through)
_STOP_WAIT = 12.0  # seconds stop() gives the whole shutdown: cleanups, then the cancels left over
_JOIN_WAIT = 2.0


class LoopStopped(RuntimeError):
    """The loop was stopped while a call waited for it."""


class BackgroundLoop:
    def __init__(self, name: str = "replicate-magic-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._work: set[asyncio.Task[Any]] = set()  # what submit() started; touched on the loop's thread only

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use (and its thread replaced if it ended)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._start_thread(self._loop)
            elif self._thread is None or not self._thread.is_alive():
                log.warning("the thread of %s ended without stop(); a new thread runs the loop", self._name)
                self._start_thread(self._loop)
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop and return at once (the panel's way)."""
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self.loop)

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

        loop = self.loop
        future = asyncio.run_coroutine_threadsafe(self._tracked(tracked()), loop)
        try:
            while True:
                try:
                    return future.result(timeout=_SLICE)
                except concurrent.futures.TimeoutError:
                    self._keep_alive(loop)
        except KeyboardInterrupt:
            future.cancel()
            finished.wait(_CLEANUP_WAIT)
            raise

    def stop(self) -> None:
        """Cancel the work given to the loop, let it clean up, close async generators, end the thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or loop.is_closed():
            return
        if thread is None or not thread.is_alive():
            if not loop.is_running():  # nothing runs it: shut it down from here (each step is bounded)
                loop.run_until_complete(self._shutdown())
                loop.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(_STOP_WAIT)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            log.warning("%s did not shut down within %g s", self._name, _STOP_WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_JOIN_WAIT)
        if not loop.is_running():
            loop.close()

    # -- on the loop's thread ----------------------------------------------------------------

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._work.add(task)
        try:
            return await coro
        finally:
            self._work.discard(task)

    async def _shutdown(self) -> None:
        # The work first: cancelled, its own cleanup cancels its predictions. Closing its
        # async generators while it still runs them fails ("already running") and cancels nothing.
        work = [task for task in self._work if not task.done()]
        for task in work:
            task.cancel()
        if work:
            await asyncio.wait(work, timeout=_CLEANUP_WAIT)
        # Then every async generator: the HTTP sessions' closers drain what is still in flight.
        await asyncio.get_running_loop().shutdown_asyncgens()
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=1.0)

    # -- the thread ----------------------------------------------------------------------------

    def _start_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=_serve, args=(loop, self._name), name=self._name, daemon=True)
        self._thread.start()

    def _keep_alive(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called while waiting: a stopped loop ends the wait, a dead thread is replaced."""
        if loop.is_closed() or self._loop is not loop:
            raise LoopStopped(f"{self._name} was stopped while a call waited for it")
        thread = self._thread
        if thread is None or not thread.is_alive():
            self.loop  # noqa: B018 - replaces the thread


def _serve(loop: asyncio.AbstractEventLoop, name: str) -> None:
    asyncio.set_event_loop(loop)
    while True:
        try:
            loop.run_forever()
            return  # stopped on purpose
        except BaseException as error:
            # Only that task ended (it holds the exception); the loop and the other tasks are fine.
            log.error("a task on %s raised %s; the loop runs on", name, type(error).__name__)


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
