"""The create-prediction rate limit: a token bucket, as Replicate's "short bursts allowed" limit behaves.

Replicate documents 600 creates a minute with short bursts above it (replicate.com/docs/topics/
predictions/rate-limits); its low-credit 429 says "reduced to 6 requests per minute with a burst of
1 requests" (a 2026 answer quoted in nodetool-ai/nodetool issue #5196), so the limit has a rate and
a burst. Successful creates carry ``ratelimit-remaining`` 599, 598, 597... with ``ratelimit-reset``
1 (replicate-python tests/cassettes/run__concurrently.yaml): a bucket holding a minute's worth,
which is the default burst here. Refused requests take no token.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """`burst` tokens at most, refilled at `per_minute` / 60 a second; one per request.

    Times are ``time.monotonic()`` seconds, passed in so that the caller records the very
    instant the bucket decided on.
    """

    def __init__(self, per_minute: float, burst: int) -> None:
        if not (math.isfinite(per_minute) and per_minute > 0):
            raise ValueError("per_minute must be a positive number")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_minute = per_minute
        self.burst = burst
        self._rate = per_minute / 60.0  # tokens a second
        self._tokens = float(burst)
        self._stamp: float | None = None  # full until first used

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self._rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be (none taken)."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def remaining(self, now: float) -> int:
        """Whole requests that would pass now (``ratelimit-remaining``)."""
        self._refill(now)
        return math.floor(self._tokens)

    def reset_after(self, now: float) -> int:
        """Whole seconds until the bucket is full again, at least 1 (``ratelimit-reset``)."""
        self._refill(now)
        return max(1, math.ceil((self.burst - self._tokens) / self._rate))
