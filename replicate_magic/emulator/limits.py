"""Memory bounds: the emulator may run for days next to a notebook, so nothing it keeps grows forever."""

from __future__ import annotations

from typing import TypeVar

from .prediction import Prediction

__all__ = [
    "MAX_BODY", "MAX_FILES_BODY", "MAX_KEPT_INPUT_BYTES", "DEFAULT_MAX_REQUESTS", "DEFAULT_MAX_PREDICTIONS",
    "DEFAULT_MAX_RECORDED_BODY", "DEFAULT_MAX_TIMES", "RecentList", "PredictionStore",
]

# Replicate does not document its request size limit. Its docs send files above 256 KB
# as URLs, not data URLs, so real create bodies stay far below this; a larger body is
# refused with 413 before it is read whole.
MAX_BODY = 10 * 1024 * 1024
# The Files API takes bodies up to 100 MiB ("an undocumented upload limit of 100MiB", a
# maintainer in replicate/replicate-javascript issue #286); larger ones get a 413 HTML page.
MAX_FILES_BODY = 100 * 1024 * 1024
# Kept predictions hold their inputs: beyond this many bytes of create bodies in total,
# the oldest are forgotten even when fewer than `max_predictions` are kept.
MAX_KEPT_INPUT_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_REQUESTS = 1000  # recorded requests (and cancel ids) kept: the newest stay
DEFAULT_MAX_PREDICTIONS = 1000
DEFAULT_MAX_RECORDED_BODY = 64 * 1024  # bytes of each recorded body (its full length is kept too)
DEFAULT_MAX_TIMES = 100_000  # times of accepted and of throttled creates kept (about 3 MB each list)

T = TypeVar("T")


class RecentList(list[T]):
    """A list that keeps only its `maxlen` newest items; `dropped` counts the ones let go.

    Only `append` and `clear` keep `dropped` exact; the emulator uses nothing else.
    """

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self.dropped = 0

    def append(self, item: T) -> None:
        super().append(item)
        excess = len(self) - self.maxlen
        if excess > 0:
            del self[:excess]
            self.dropped += excess

    def clear(self) -> None:
        self.dropped += len(self)
        super().clear()


class PredictionStore(dict[str, Prediction]):
    """Predictions by id, in creation order, at most `max_count` of them.

    When full, the oldest *finished* prediction goes first, so a client still streaming
    or polling keeps its prediction; only when every kept one is still running does the
    oldest go, and it is stopped (nothing should run that no one can see or cancel).
    """

    def __init__(self, max_count: int, max_input_bytes: int = MAX_KEPT_INPUT_BYTES) -> None:
        super().__init__()
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        self.max_count = max_count
        self.max_input_bytes = max_input_bytes

    def add(self, pred: Prediction) -> None:
        self[pred.id] = pred
        while len(self) > 1 and self._over_budget():
            self._evict(keep=pred)

    def _over_budget(self) -> bool:
        return (len(self) > self.max_count
                or sum(p.input_bytes for p in self.values()) > self.max_input_bytes)

    def _evict(self, keep: Prediction) -> None:
        others = [p for p in self.values() if p is not keep]
        victim = next((p for p in others if p.terminal), others[0])
        del self[victim.id]
        if not victim.terminal:
            victim.shutdown()
