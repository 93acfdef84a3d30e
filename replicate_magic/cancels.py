"""Nothing bills in the dark: the predictions started on a loop and not seen to end.

``InFlight`` (one per event loop, see ``sessions.inflight()``) knows every prediction this
process created there and has not seen end, and runs the cancels as tasks of its own, so
that a cancel runs to its end even when whoever asked for it is cancelled again, and a
create stopped before its answer arrived is waited for in the background and then
cancelled. The loop's shutdown drains it (``drain``) before the HTTP session closes.

``StopReport`` tells a caller what became of the cancels started while it watched:
``"cancelled"``, or which prediction may still be running and where to see it. It is
thread-safe, so the kernel thread can read what the loop's thread fills in. No aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
WEB_URL = "https://replicate.com/p/{}"
PREDICTIONS_URL = "https://replicate.com/predictions"
_REMEMBERED = 256  # successful cancels kept, so that a second cancel of one is not sent again

Canceller = Callable[[], Awaitable["CancelOutcome"]]


@dataclass(frozen=True)
class CancelOutcome:
    """What became of stopping one prediction (or one create that had not answered)."""

    prediction_id: str | None
    """None: a create stopped before its answer, which left no prediction id to cancel."""
    cancelled: bool
    """Nothing is left running: Replicate accepted the cancel, or the create made nothing."""
    reason: str = ""
    """Why not, when not (for logs and for the message)."""

    @property
    def web_url(self) -> str:
        return WEB_URL.format(self.prediction_id) if self.prediction_id else PREDICTIONS_URL

    def message(self) -> str:
        if self.prediction_id is None:
            if self.cancelled:
                return "no prediction was created"
            return f"could not tell whether a prediction was created ({self.reason}): see {PREDICTIONS_URL}"
        if self.cancelled:
            return f"prediction {self.prediction_id} was cancelled"
        return f"could not cancel {self.prediction_id}: it may still be running, see {self.web_url}"


_watching: contextvars.ContextVar[StopReport | None] = contextvars.ContextVar("replicate_stop_report", default=None)


REPORT_WAIT = 2.0  # seconds an interrupted cell waits to say what its cancels did


class StopReport:
    """The cancels started in this context while it watches, and how each ended.

    Use ``with report.watching():`` around a turn (inside the coroutine); after a stop,
    ``report.wait(seconds)`` (any thread) or ``await report.settled()`` (the loop), then
    ``report.message()``.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._outcomes: list[CancelOutcome] = []
        self._pending: dict[asyncio.Future[Any], str | None] = {}  # future -> prediction id if known

    @contextmanager
    def watching(self) -> Iterator[StopReport]:
        token = _watching.set(self)
        try:
            yield self
        finally:
            _watching.reset(token)

    def add(self, future: asyncio.Future[CancelOutcome | None], prediction_id: str | None) -> None:
        """Follow one cancel (or one stopped create); called on the loop's thread."""
        with self._changed:
            if future in self._pending:
                return
            self._pending[future] = prediction_id
        future.add_done_callback(self._settle)

    def _settle(self, future: asyncio.Future[CancelOutcome | None]) -> None:
        with self._changed:
            prediction_id = self._pending.pop(future, None)
            outcome = _outcome_of(future, prediction_id)
            if outcome is not None:
                self._outcomes.append(outcome)
            self._changed.notify_all()

    @property
    def outcomes(self) -> list[CancelOutcome]:
        with self._changed:
            return list(self._outcomes)

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._pending)

    def wait(self, timeout: float) -> bool:
        """Block until every cancel followed has an outcome (True), or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending, timeout)

    async def settled(self, timeout: float | None = None) -> bool:
        """``wait`` for the loop the cancels run on: True when every one has an outcome."""
        with self._changed:
            pending = list(self._pending)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return self.pending == 0

    def message(self) -> str:
        """What to tell the user: "cancelled", or what may still be running and where to see it."""
        with self._changed:
            outcomes, pending = list(self._outcomes), list(self._pending.values())
        notes = [outcome.message() for outcome in outcomes if not outcome.cancelled]
        for prediction_id in pending:
            notes.append(f"cancelling {prediction_id}: Replicate has not answered yet" if prediction_id else
                         "Replicate had not answered the create yet: what it makes is cancelled when it answers")
        if notes:
            return "; ".join(notes)
        if any(outcome.prediction_id for outcome in outcomes):
            return "cancelled"
        return "nothing was running on Replicate"


def _outcome_of(future: asyncio.Future[CancelOutcome | None], prediction_id: str | None) -> CancelOutcome | None:
    if future.cancelled():
        return CancelOutcome(prediction_id, False, "the cancel was itself interrupted")
    error = future.exception()
    if error is not None:
        return CancelOutcome(prediction_id, False, f"{type(error).__name__}: {error}")
    return future.result()


class InFlight:
    """Predictions started on one event loop and not yet seen to end; it cancels them."""

    def __init__(self) -> None:
        self._open: dict[str, Canceller] = {}
        self._cancels: dict[str, asyncio.Task[CancelOutcome]] = {}
        # The last cancels that worked, so that a second request for one sends nothing.
        self._cancelled: collections.OrderedDict[str, CancelOutcome] = collections.OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def open(self) -> list[str]:
        """Ids of the predictions not seen to end (nor cancelled)."""
        return list(self._open)

    @property
    def idle(self) -> bool:
        """Nothing open and nothing running in the background."""
        return not self._open and not self._background

    def opened(self, prediction_id: str, cancel: Canceller) -> None:
        """A prediction now exists on Replicate; ``cancel`` stops it (and never raises)."""
        self._open.setdefault(prediction_id, cancel)

    def ended(self, prediction_id: str) -> None:
        """It reached an end on Replicate: nothing to cancel."""
        self._open.pop(prediction_id, None)

    def cancel(self, prediction_id: str, fallback: Canceller | None = None) -> asyncio.Future[CancelOutcome]:
        """Start its cancel, or join the one under way; it runs on if the caller is cancelled.

        ``fallback`` cancels a prediction this registry was never told about.
        """
        task = self._cancels.get(prediction_id)
        if task is not None:  # under way: join it
            _follow(task, prediction_id)
            return task
        cancel = self._open.get(prediction_id) or fallback
        known = self._cancelled.get(prediction_id)
        if known is not None or cancel is None:  # cancelled already, or seen to end: nothing runs
            done: asyncio.Future[CancelOutcome] = asyncio.get_running_loop().create_future()
            done.set_result(known or CancelOutcome(prediction_id, True))
            return done
        task = self._spawn(self._run_cancel(prediction_id, cancel))
        self._cancels[prediction_id] = task
        task.add_done_callback(lambda _: self._forget_cancel(prediction_id, task))
        _follow(task, prediction_id)
        return task

    def _forget_cancel(self, prediction_id: str, task: asyncio.Task[CancelOutcome]) -> None:
        # Only what is under way is kept: the registry does not grow with a long session.
        if self._cancels.get(prediction_id) is task:
            del self._cancels[prediction_id]

    def adopt(self, settle: Coroutine[Any, Any, CancelOutcome | None]) -> asyncio.Future[CancelOutcome | None]:
        """Run ``settle`` (wait for a stopped create's answer, cancel what it made) in the background."""
        task = self._spawn(settle)
        _follow(task, None)
        return task

    async def drain(self, timeout: float) -> list[CancelOutcome]:
        """Cancel everything still open, and wait (at most ``timeout`` s) for all cancels and creates."""
        for prediction_id in list(self._open):
            self.cancel(prediction_id)
        tasks = set(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        outcomes = [_outcome_of(task, None) for task in tasks if task.done()]
        for prediction_id in self._open:
            log.warning("could not cancel %s in time: it may still be running, see %s",
                        prediction_id, WEB_URL.format(prediction_id))
        return [outcome for outcome in outcomes if outcome is not None]

    async def _run_cancel(self, prediction_id: str, cancel: Canceller) -> CancelOutcome:
        outcome = await cancel()
        if outcome.cancelled:
            self._open.pop(prediction_id, None)
            self._cancelled[prediction_id] = outcome
            while len(self._cancelled) > _REMEMBERED:
                self._cancelled.popitem(last=False)
        else:
            log.warning("%s (%s)", outcome.message(), outcome.reason)
        return outcome

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # In a context where no report watches: what the task starts is not reported twice.
        context = contextvars.copy_context()
        context.run(_watching.set, None)
        task: asyncio.Task[Any] = context.run(asyncio.ensure_future, work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _follow(future: asyncio.Future[Any], prediction_id: str | None) -> None:
    report = _watching.get()
    if report is not None:
        report.add(future, prediction_id)


