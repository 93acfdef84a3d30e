"""Several models asked the same prompt at once: the engine of ``%%replicate -m A -m B``. I/O.

Each model's turn is a task on the one loop, an ordinary ``ChatSession`` turn (logged, and
replayed from the log with ``--cache``), so the replies stream together. A failure belongs to
its model alone: one line, and the others go on. Cancelling the run cancels every model still
streaming, and each ``PredictionStream`` cancels its own prediction on Replicate; each model
watches its own ``StopReport``, so what became of each cancel is told per model.

History: each model is sent the same conversation history (none with ``--no-history``), and no
reply is recorded in it. A conversation holds one answer per prompt; keeping one of several
would be a guess, and keeping all would send every later turn a muddle. ``history_note`` says
so under the columns. No IPython here: the magic and the panel both use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from .cancels import StopReport
from .chat import ChatSession, Metrics, TurnResult
from .errors import ReplicateMagicError
from .request import TurnRequest

__all__ = ["Listener", "ModelOutcome", "SideBySide", "history_note"]

log = logging.getLogger(__name__)


class Listener(Protocol):
    """What a display of the run hears, on the loop's thread; ``index`` is the model's place."""

    def token(self, index: int, text: str) -> None: ...

    def status(self, index: int, line: str) -> None: ...

    def replied(self, index: int, outcome: ModelOutcome) -> None:
        """The reply is complete (its metrics may still be on their way)."""

    def ended(self, index: int, outcome: ModelOutcome) -> None:
        """Nothing more comes for this model: its metrics are in, or it failed."""


@dataclass
class ModelOutcome:
    """How one model's part went; readable at any time, also after an interrupt."""

    label: str  # the model as the user named it (an alias stays an alias)
    result: TurnResult | None = None  # once the reply is complete
    metrics: Metrics | None = None  # Replicate's figures (else the client's), when asked for
    error: Exception | None = None  # a ReplicateMagicError, or a bug's exception
    ended: bool = False
    stops: StopReport = field(default_factory=StopReport)  # the cancels this model's turn needed

    @property
    def failure(self) -> str | None:
        """The error as one line, like the single-model cell shows it; None when it did not fail."""
        if self.error is None:
            return None
        if isinstance(self.error, ReplicateMagicError):
            text = f"{type(self.error).__name__}: {self.error}"
        else:
            text = (f"Unexpected {type(self.error).__name__}: {self.error} (a bug in replicate_magic; "
                    "the traceback is in the kernel's log)")
        return " ".join(text.split())

    @property
    def value(self) -> Any:
        """What ``--out`` holds for this model: its reply (or files), None when it has none."""
        return None if self.result is None else self.result.value

    def fate(self) -> str:
        """After a stop, what became of this model, in a few words."""
        if self.result is not None:
            return "complete"
        if self.error is not None:
            return "failed"
        return self.stops.message()


class SideBySide:
    """One comparison: ``await run(listener)``; ``outcomes`` stay readable after a cancel."""

    def __init__(self, session: ChatSession, requests: Sequence[TurnRequest], labels: Sequence[str], *,
                 metrics: bool = True) -> None:
        if len(requests) != len(labels):
            raise ValueError("one label per request")
        self.session = session
        self.requests = [replace(r, record=False) for r in requests]  # see the module's doc: nothing is recorded
        self.outcomes = [ModelOutcome(label) for label in labels]
        self.metrics = metrics

    def values(self) -> dict[str, Any]:
        """Model -> reply (None for one that failed or was stopped), in the order given."""
        return {outcome.label: outcome.value for outcome in self.outcomes}

    def fates(self) -> str:
        """One line: what became of each model (after a stop)."""
        return "; ".join(f"{outcome.label}: {outcome.fate()}" for outcome in self.outcomes)

    async def run(self, listener: Listener) -> list[ModelOutcome]:
        tasks = [asyncio.ensure_future(self._one(i, listener)) for i in range(len(self.requests))]
        try:
            await asyncio.wait(tasks)  # unlike gather, it never cancels a task twice (its cleanup sends the cancel)
        finally:  # cancelled (an interrupt, Stop): each model still running is cancelled once, and waited for
            running = [task for task in tasks if not task.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
        for task in tasks:
            task.result()  # a listener's bug is raised here, after the other models finished
        return self.outcomes

    async def _one(self, index: int, listener: Listener) -> None:
        outcome = self.outcomes[index]
        try:
            # Inside this task: the cancels its stream starts are this model's to report.
            with outcome.stops.watching():
                result = await self.session.ask(self.requests[index], on_token=partial(listener.token, index),
                                                on_log=partial(listener.status, index))
        except ReplicateMagicError as error:
            outcome.error = error
        except Exception as error:  # a bug: this column says so, the others go on
            log.exception("a side-by-side turn of %s failed unexpectedly", outcome.label)
            outcome.error = error
        else:
            outcome.result = result
            listener.replied(index, outcome)
            outcome.metrics = await self._metrics(result)
        outcome.ended = True
        listener.ended(index, outcome)

    async def _metrics(self, result: TurnResult) -> Metrics | None:
        if not self.metrics:
            return None
        try:
            return await self.session.reported_metrics(result)
        except ReplicateMagicError:  # the reply is complete; its metrics are a nicety
            return result.metrics


def history_note(session: ChatSession, request: TurnRequest) -> str:
    """What each model was sent besides the prompt, and that nothing was recorded."""
    if not request.use_history:
        return "side by side: each model got the prompt alone (--no-history); nothing was recorded"
    earlier = sum(1 for message in session.messages_for(request)[:-1] if message["role"] == "user")
    kept = "no reply was recorded in it" + (" (nor the -s prompt)" if request.system else "")
    if not earlier:
        return f"side by side: each model got the prompt alone (conversation {request.chat} is empty); {kept}"
    turns = f"{earlier} earlier turn" + ("" if earlier == 1 else "s")
    return f"side by side: each model got the same {turns} of conversation {request.chat}; {kept}"
