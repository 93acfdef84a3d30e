"""How fast predictions are created: one pace for the whole kernel, one pause for all on a 429.

Replicate allows 600 prediction creates a minute, with short bursts, and far fewer on a low
balance. A batch of 64 workers that each retried its own 429 would hammer the API while it
is throttling; here every create of the kernel takes a token from one bucket (``rate`` a
minute, as many at once when it is full, as Replicate's own bucket allows), and a 429's
``Retry-After`` pauses every create until then, so the workers wait it out together. One
limiter per event loop and API (the magic, the panel and ``replicate_magic.map`` share the
private loop, so they share its limiter).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable

__all__ = ["DEFAULT_CREATE_RATE", "CreateLimiter", "create_limiter"]

DEFAULT_CREATE_RATE = 600  # creates a minute: Replicate's documented limit
# Replicate's bucket holds a minute's worth (its recorded ratelimit-remaining counts down from
# 599): a batch may start that many at once, then keeps the rate.
_BURST_SECONDS = 60.0


class CreateLimiter:
    """A token bucket for creates, plus a shared pause.

    ``acquire()`` waits for a token (and for any pause); ``pause(seconds)`` holds every
    create until then. ``clock`` is injectable for tests.
    """

    def __init__(self, rate: float = DEFAULT_CREATE_RATE, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.set_rate(rate, burst)
        self._tokens = self.burst
        self._stamp = clock()
        self._resume_at = 0.0
        self.created = 0  # tokens handed out, for tests and benchmarks
        self.paused_for = 0.0  # seconds of pauses asked for by 429s

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Creates a minute (and at once); the setting can change between cells."""
        if rate <= 0:
            raise ValueError("rate must be above 0")
        self.rate = float(rate)
        self.burst = max(1.0, burst if burst is not None else self.rate / 60 * _BURST_SECONDS)

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            if now < self._resume_at:
                await asyncio.sleep(self._resume_at - now)
                continue
            self._refill(now)
            if self._tokens >= 1:
                self._tokens -= 1
                self.created += 1
                return
            await asyncio.sleep((1 - self._tokens) * 60 / self.rate)

    def pause(self, seconds: float) -> None:
        """Replicate said 429 with ``Retry-After``: no create of this kernel goes out before then."""
        resume = self._clock() + max(0.0, seconds)
        if resume > self._resume_at:
            self.paused_for += resume - max(self._resume_at, self._clock())
            self._resume_at = resume
        self._tokens = min(self._tokens, 0.0)  # after the pause, one at a time again

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate / 60)
        self._stamp = now


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, CreateLimiter]] = \
    weakref.WeakKeyDictionary()


def create_limiter(base_url: str, rate: float | None = None) -> CreateLimiter:
    """The running loop's limiter for the API at ``base_url``; ``rate`` (a minute) updates it."""
    per_api = _limiters.setdefault(asyncio.get_running_loop(), {})
    limiter = per_api.get(base_url)
    if limiter is None:
        limiter = per_api[base_url] = CreateLimiter(rate or DEFAULT_CREATE_RATE)
    elif rate is not None and rate != limiter.rate:
        limiter.set_rate(rate)
    return limiter
