"""Many independent turns at once, bounded: the engine of ``--each`` and ``replicate_magic.map``. I/O.

At most ``concurrency`` items are in flight; creates keep the kernel's pace (limiter.py),
and a 429 pauses them all. A transient failure of one item (5xx, a dropped or stalled
stream, a timeout) is tried again, twice at most, after a short wait; any other failure is
that item's one-line error and never stops the others. Results land in input order as they
finish, so whatever finished before an interrupt is kept: cancelling the batch cancels each
item still in flight, and each item's ``PredictionStream`` cancels its prediction on
Replicate. Each item is an ordinary turn of ``ChatSession`` (no history), so it is logged,
and with replay on, a re-run asks only for what the log does not hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .chat import ChatSession, TurnResult
from .errors import ModelError, ReplicateMagicError, ResponseError, StreamError
from .journal import LogGroup
from .request import TurnRequest

__all__ = ["BatchRun", "ItemOutcome", "Progress"]

RETRIES = 2  # tries after the first, for a transient failure
_RETRY_PAUSE = 1.0  # seconds before the first retry; doubled for the next


@dataclass
class ItemOutcome:
    key: Any
    text: str | None = None  # the reply; None until it succeeded
    error: str | None = None  # one line, when it failed for good
    result: TurnResult | None = None
    tries: int = 0

    @property
    def done(self) -> bool:
        return self.text is not None or self.error is not None


@dataclass
class Progress:
    """How a batch stands; what the live display shows."""

    total: int
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    replayed: int = 0
    tokens: int = 0
    cost: float | None = None  # the estimated cost so far, where every priced item had a price
    started: float = field(default_factory=time.monotonic)
    latest: ItemOutcome | None = None
    log_problems: list[str] = field(default_factory=list)  # the local log's failures, one line each

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first item finished)."""
        finished = self.done + self.failed
        if not finished or finished >= self.total:
            return None
        return self.elapsed / finished * (self.total - finished)


def transient(error: BaseException) -> bool:
    """Worth another try: the service or the connection failed in passing."""
    if isinstance(error, StreamError):
        return True
    if isinstance(error, ModelError):  # the model ran and failed: billed, and likely to fail again
        return False
    return isinstance(error, ResponseError) and (error.status is None or error.status >= 500)


class BatchRun:
    """One batch: ``await run()``; ``outcomes`` and ``progress`` stay readable after an interrupt.

    ``on_change`` is called (on the loop) whenever the progress changed.
    """

    def __init__(self, session: ChatSession, requests: Sequence[TurnRequest], keys: Sequence[Any], *,
                 concurrency: int, on_change: Callable[[Progress], None] | None = None,
                 retry_pause: float = _RETRY_PAUSE) -> None:
        if len(requests) != len(keys):
            raise ValueError("one key per request")
        self.session = session
        self.requests = [replace(r, use_history=False) for r in requests]  # independent: no history
        self.outcomes = [ItemOutcome(key) for key in keys]
        self.progress = Progress(total=len(requests))
        self.concurrency = concurrency
        self._on_change = on_change
        self._retry_pause = retry_pause
        self._priced = True

    async def run(self) -> list[ItemOutcome]:
        slots = asyncio.Semaphore(self.concurrency)
        group = None if self.session.log is None else LogGroup(self.session.log)
        self.session.log_group = group  # the items' exchanges are logged together, twice a second
        workers = [asyncio.ensure_future(self._item(i, slots)) for i in range(len(self.requests))]
        try:
            await asyncio.wait(workers)
        except asyncio.CancelledError:
            self._log_now(group)  # what finished is in the log before anything else happens
            # Interrupted: each item still running is cancelled once (its stream then cancels its
            # prediction) and waited for; cancelling twice would cut into that cleanup.
            for worker in workers:
                worker.cancel()
            await asyncio.wait(workers)
            raise
        finally:
            self.session.log_group = None
            self._log_now(group)  # the rest, the interrupted items' too
        for worker in workers:  # a bug in one item is not an item's failure: let it show
            if not worker.cancelled() and worker.exception() is not None:
                raise worker.exception()  # type: ignore[misc]
        return self.outcomes

    async def _item(self, index: int, slots: asyncio.Semaphore) -> None:
        outcome = self.outcomes[index]
        async with slots:
            self.progress.in_flight += 1
            self._changed()
            try:
                await self._ask(index, outcome)
            finally:
                self.progress.in_flight -= 1
                self._changed()

    async def _ask(self, index: int, outcome: ItemOutcome) -> None:
        request = self.requests[index]
        for attempt in range(RETRIES + 1):
            outcome.tries = attempt + 1
            tokens = 0

            def count(_: str) -> None:
                nonlocal tokens
                tokens += 1

            try:
                result = await self.session.ask(request, on_token=count)
                metrics = await self.session.reported_metrics(result)  # also logs the exchange
            except ReplicateMagicError as error:
                if attempt < RETRIES and transient(error):
                    await asyncio.sleep(self._retry_pause * 2 ** attempt)
                    continue
                outcome.error = " ".join(str(error).split())
                self.progress.failed += 1
                self.progress.latest = outcome
                return
            outcome.text, outcome.result = result.text, result
            progress = self.progress
            progress.done += 1
            progress.replayed += result.replayed is not None
            progress.tokens += metrics.output_tokens or tokens
            cost = metrics.cost_usd
            if result.replayed is None:
                if cost is None:
                    self._priced = False
                progress.cost = None if not self._priced else (progress.cost or 0.0) + (cost or 0.0)
            progress.latest = outcome
            return

    def _log_now(self, group: LogGroup | None) -> None:
        """Write what the log still holds back; its failures show in ``progress.log_problems``."""
        if group is not None:
            group.flush()
            self.progress.log_problems = list(group.problems)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.progress)
