"""A server of the tests' own on its own event loop in a daemon thread: ``with`` starts and stops it.

Subclasses write ``_serve(ready)``: start listening, set ``self.port``, call ``ready.set()``,
then ``await self._stop.wait()`` and clean up. The loop closes when ``_serve`` returns.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class ServerThread:
    join_timeout = 10.0

    def __enter__(self) -> Any:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.join_timeout)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._begin(ready))
        self._loop.close()

    async def _begin(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()  # made on the loop that waits on it
        await self._serve(ready)

    async def _serve(self, ready: threading.Event) -> None:
        raise NotImplementedError
