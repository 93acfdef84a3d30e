"""Injectable failures: what real Replicate (and the network in front of it) can do to a client."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace

__all__ = ["Faults", "FaultBook"]

_COUNTERS = ("rate_limit", "billing_required", "server_error", "html_error", "file_error", "invalid_json")


@dataclass
class Faults:
    """Faults for the emulator; pass to :meth:`Emulator.inject`.

    Counters (``rate_limit``, ``billing_required``, ``server_error``, ``html_error``,
    ``file_error``, ``invalid_json``) apply to the next N matching requests; everything else applies to the
    next created prediction (the ``file_*`` and ``image_bytes`` ones to its output files).
    For image and audio models, ``tokens_per_second`` paces denoising steps, ``stall_after``
    and ``error_after`` count steps, and ``tokens`` become the output URLs verbatim.
    """

    drop_after: int | None = None
    """Abort the first stream connection after N output events (no ``done``)."""
    drop_every_connection: bool = False
    """With ``drop_after``: abort every connection after N output events (and before ``done``)."""
    drop_clean: bool = False
    """Drop by ending the HTTP body properly instead of aborting the TCP connection."""
    stall_after: int | None = None
    """Pause generation after N output tokens until canceled (streams stay open, silent)."""
    error_after: int | None = None
    """Fail the prediction after N output tokens."""
    error_message: str = "CUDA out of memory (emulated)"
    rate_limit: int = 0
    """The next N create requests get 429 with ``Retry-After``."""
    retry_after: float = 1
    billing_required: int = 0
    """The next N create requests get 402 "Billing required" (not a rate limit)."""
    server_error: int = 0
    """The next N API requests get a 500 problem+json."""
    html_error: int = 0
    """The next N API requests get a 502 Cloudflare-style HTML page."""
    no_stream: bool = False
    """The next prediction has no ``urls.stream`` (clients must poll ``urls.get``)."""
    tokens: list[str] | None = None
    """The next prediction emits exactly these output tokens."""
    tokens_per_second: float | None = None
    cold_start: float | None = None
    logs: list[str] | None = None
    """The next prediction emits these ``logs`` event lines before its first output token
    (after its boot lines, before the second half of ``cold_start``, so they show while it
    boots) and keeps them in its ``logs`` field, as the real API does."""
    slow_create: float = 0.0
    """Answer the next create this many seconds late: the prediction already exists meanwhile."""
    file_error: int = 0
    """The next N file-host downloads get a 503."""
    invalid_json: int = 0
    """The next N answers in JSON mode (json_mode.py) are invalid: they lack their first required
    property (or are cut short when nothing is required), as ``[[emulator:bad-json]]`` does."""
    file_drop_after: int | None = None
    """Downloads of the next prediction's files end (TCP closed) after N bytes of the body: the
    first download of each file, or every one with ``drop_every_connection``."""
    file_stall_after: int | None = None
    """Downloads of the next prediction's files stall after N bytes (first, or every, as above)."""
    file_lifetime: float | None = None
    """Seconds the next prediction's files stay on the file host (default: the emulator's)."""
    file_body: bytes | None = None
    """The next prediction's files hold these bytes instead (a zip bomb, something unshowable)."""
    file_content_type: str | None = None
    """...served with this Content-Type (default: the model's own type for its format)."""
    file_delay: float | None = None
    """Seconds the file host waits before sending each of the next prediction's files' bodies
    (every download, after the headers): a slow file host, so concurrent downloads show."""
    image_bytes: int | None = None
    """The next prediction's PNG or WebP images are seeded noise of about this many bytes each
    (e.g. 4_000_000 for benchmarks); JPEG ones stay small."""


class FaultBook:
    """Thread-safe store of injected faults (tests inject from their own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = {name: 0 for name in _COUNTERS}
        self._retry_after: float = 1
        self._pending = Faults()

    def inject(self, faults: Faults) -> None:
        with self._lock:
            for name in _COUNTERS:
                self._counters[name] += getattr(faults, name)
            if faults.rate_limit:
                self._retry_after = faults.retry_after
            # Later non-default prediction faults override earlier pending ones.
            default = Faults()
            changes = {
                f.name: getattr(faults, f.name)
                for f in fields(Faults)
                if f.name not in _COUNTERS and getattr(faults, f.name) != getattr(default, f.name)
            }
            self._pending = replace(self._pending, **changes)

    def take_counter(self, name: str) -> bool:
        """Use up one unit of a counter; True when the fault should fire now."""
        with self._lock:
            if self._counters[name] > 0:
                self._counters[name] -= 1
                return True
            return False

    @property
    def retry_after(self) -> float:
        return self._retry_after

    def take_prediction_faults(self) -> Faults:
        """The faults for the prediction being created (and forget them)."""
        with self._lock:
            pending, self._pending = self._pending, Faults()
            return pending
