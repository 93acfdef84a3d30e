"""The chat panel's state and actions, apart from its widgets: testable without a frontend.

``PanelModel`` is the ipywidgets tutorial's "model" half (``panel.py`` is the view). Its
traits say what the view shows; ``send`` / ``stop`` / ``clear`` are what its buttons do.
A turn runs on the private loop the magic uses (``shared_loop().submit``), so ``send``
returns at once and the kernel stays free to see a Stop click. Trait changes made by a
running turn happen on that loop's thread; observers must only set values (widget traits),
never use ``with output:``.

Conversations live in the kernel's store, shared with ``%%replicate -c NAME``: the model
re-reads its conversation on each turn (and whenever ``refresh`` is called), and a turn is
recorded only when its reply completes (``ChatSession`` does that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from traitlets import Bool, HasTraits, Instance, Tuple, Unicode, observe, validate

from .cancels import StopReport
from .catalog import resolve_model
from .chat import ChatSession, TurnResult
from .compare import ModelOutcome, SideBySide, history_note
from .display import FrameThrottle, result_notes
from .errors import ReplicateMagicError
from .files import FileOutput
from .loop import shared_loop
from .options import CellOptions, model_names
from .request import Configured, TurnRequest, build_request
from .terminal import clean
from .textparts import TextParts
from .traits import setting_trait

__all__ = ["ColumnDraft", "Comparison", "Draft", "PanelModel"]

log = logging.getLogger(__name__)

STOPPED = "stopped"
FAILED = "failed"
MAX_MADE = 20  # exchanges with file models the panel keeps showing (their bytes are in memory)


@dataclass(frozen=True)
class Draft:
    """The exchange not (yet) in the history: the one streaming, or the last one that
    was stopped or failed (its partial reply stays visible, marked by ``note``)."""

    prompt: str
    reply: str
    model: str
    note: str = ""  # "" while streaming, else STOPPED or FAILED
    files: tuple[FileOutput, ...] = ()  # what a model that makes files made (in ``PanelModel.made``)


@dataclass(frozen=True)
class ColumnDraft:
    """One model's column in a side-by-side exchange."""

    model: str
    reply: str = ""
    status: str = ""  # stands in the column until the first token
    note: str = ""  # under the reply: its metrics line, its error, or how it was stopped
    failed: bool = False  # the note is an error
    done: bool = False  # the reply is complete
    files: tuple[FileOutput, ...] | None = None  # a model that makes files: what it made, in order


@dataclass(frozen=True)
class Comparison:
    """Several models' replies to one prompt, side by side; never part of the history."""

    prompt: str
    columns: tuple[ColumnDraft, ...]
    note: str = ""  # under the columns: what each model was sent, and that nothing was recorded


class PanelModel(HasTraits):
    """One conversation's chat state: settings in, busy/status/draft/turns out.

    The traits tagged ``setting`` are what a caller may set; the rest is the panel's state.
    """

    # Defaults, bounds and help are declared in settings.py; the panel's sliders start at a value.
    chat = Unicode("default", help="The conversation's name, shared with %%replicate -c NAME.").tag(setting=True)
    model_name = setting_trait("model").tag(setting=True)
    temperature = setting_trait("temperature", 0.7).tag(setting=True)
    max_tokens = setting_trait("max_tokens", 1024).tag(setting=True)
    system_prompt = Unicode("", help="Sent with each turn; becomes the conversation's system prompt.").tag(
        setting=True)
    max_history = setting_trait("max_history").tag(setting=True)
    default_inputs = setting_trait("default_inputs").tag(setting=True)
    timeout = setting_trait("timeout").tag(setting=True)
    connect_timeout = setting_trait("connect_timeout").tag(setting=True)

    busy = Bool(False, help="A turn is running (or stopping).")
    status = Unicode("", help="One line of progress, result or error.")
    error = Bool(False, help="status is an error message.")
    draft = Instance(Draft, allow_none=True, help="The exchange not in the history, if any.")
    turns = Tuple(help="The conversation's recorded turns, as last read from the store.")
    attachments = Tuple(help="Images (attachments.Attachment) sent with the next message, to the model's "
                        "image input (as --image); cleared when it is sent.")
    made = Tuple(help="Exchanges with models that make files (images, audio), newest last: shown, "
                 "not part of the conversation.")
    compare_with = Unicode("", help="More models to ask with model_name, side by side: owner/name, comma-"
                           "separated; each model gets the history and no reply is recorded. Empty: one model.").tag(
        setting=True)
    comparison = Instance(Comparison, allow_none=True, help="The last side-by-side exchange, streaming or done.")

    def __init__(self, session: ChatSession | None = None, **kwargs: Any) -> None:
        self.session = session if session is not None else ChatSession()
        # The kernel thread acts while the loop thread finishes a turn; re-entrant because
        # observers of the traits set under it may call back in.
        self._lock = threading.RLock()
        self._task: concurrent.futures.Future[TurnResult | None] | None = None
        self._finished: concurrent.futures.Future[TurnResult | None] = concurrent.futures.Future()
        self._finished.set_result(None)
        self._clear_when_stopped = False
        self._system_seen: str | None = None
        settings = self.class_trait_names(setting=True)
        unknown = sorted(set(kwargs) - set(settings))
        if unknown:  # traitlets would pass them on with only a warning: a typo must not vanish
            raise TypeError(f"unknown panel setting {', '.join(unknown)}; the settings are: {', '.join(settings)}")
        super().__init__(**kwargs)
        self.refresh()

    # -- actions (called from the kernel thread: button clicks, notebook code) ----------------

    def send(self, prompt: str) -> concurrent.futures.Future[TurnResult | None] | None:
        """Start a turn and return at once; None when nothing was started (status says why).

        The future resolves when the turn is over: to its result, or to None when it was
        stopped or failed. ``await model.wait()`` is the same without blocking a kernel.
        """
        prompt = prompt.strip()
        with self._lock:
            if self.busy:
                self._say("Still answering: press Stop first, or wait.")
                return None
            if not prompt:
                self._say("Type a message first.")
                return None
            self.refresh()  # turns the magic recorded since count as history for this one
            models = self._models()
            if models is None:
                return None
            request = self._request(prompt)
            self.attachments = ()  # sent with this message only, as the prompt box's text
            self.busy = True
            self._finished = concurrent.futures.Future()
            work = self._start_compare(request, models) if len(models) > 1 else self._start_turn(request)
            try:
                self._task = shared_loop().submit(work)
            except BaseException:
                work.close()
                self.busy = False
                raise
            return self._finished

    def _start_turn(self, request: TurnRequest) -> Coroutine[Any, Any, TurnResult | None]:
        self.comparison = None
        self.draft = Draft(request.prompt, "", request.model)
        self._say(f"asking {request.model}…")
        return self._run(request, self._finished)

    def _start_compare(self, request: TurnRequest, models: Sequence[str]) -> Coroutine[Any, Any, TurnResult | None]:
        self.draft = None
        columns = tuple(ColumnDraft(name, status=f"asking {name}…") for name in models)
        self.comparison = Comparison(request.prompt, columns, history_note(self.session, request))
        self._say(f"asking {len(models)} models side by side…")
        requests = [replace(request, model=resolve_model(name)) for name in models]
        return self._compare(requests, models, self._finished)

    def stop(self) -> None:
        """Cancel the running turn; its cleanup cancels the prediction on Replicate."""
        with self._lock:
            task = self._task
            if task is None or task.done():
                return
            self._say("stopping…")
            # Cancels the task on the loop: CancelledError in ask(), whose cleanup cancels the
            # prediction (also one whose create request was still under way).
            task.cancel()

    def clear(self) -> None:
        """Forget the conversation (after stopping a running turn)."""
        with self._lock:
            if self.busy:
                self._clear_when_stopped = True  # done by the turn as it ends, on its thread
            else:
                self._reset_conversation()
                return
        self.stop()

    async def wait(self) -> TurnResult | None:
        """Await the current (or last) turn from any event loop, e.g. a notebook cell."""
        return await asyncio.wrap_future(self._finished)

    def refresh(self) -> None:
        """Re-read the conversation: turns (and a system prompt set elsewhere, e.g. by -s)."""
        store = self.session.store
        conversation = store.get(self.chat) if self.chat in store else None
        turns = conversation.turns if conversation is not None else ()
        if turns != self.turns and not self.busy and self.draft is not None and self.draft.note:
            self.draft = None  # a turn made elsewhere (the magic) follows the stopped one: drop it
        self.turns = turns
        system = conversation.system if conversation is not None else None
        if system != self._system_seen:  # changed elsewhere: show it; else keep the user's edit
            self._system_seen = system
            self.system_prompt = system or ""

    # -- the turn (runs on the private loop's thread) ---------------------------------------

    async def _run(
        self, request: TurnRequest, finished: concurrent.futures.Future[TurnResult | None],
    ) -> TurnResult | None:
        reply: list[str] = []

        def publish() -> None:
            if self.draft is not None:
                self.draft = replace(self.draft, reply="".join(reply))

        throttle = FrameThrottle(publish)

        def on_token(token: str) -> None:
            reply.append(token)
            throttle.changed()

        def on_log(line: str) -> None:
            if not reply:  # boot logs matter only until the reply starts
                self._say(clean(line).strip()[:200] or self.status)  # a model's output: no controls

        result: TurnResult | None = None
        outcome: BaseException | None = None
        stops = StopReport()  # what the Stop's cancel did: said as it is, never assumed
        try:
            with stops.watching():
                result = await self.session.ask(request, on_token=on_token, on_log=on_log)
        except asyncio.CancelledError:
            # The cancel of a known prediction has settled by now; one still waiting for an
            # unanswered create says so.
            self._end_turn(STOPPED, "".join(reply),
                           f"Stopped: {stops.message()}; this turn is not in the history.")
            raise
        except ReplicateMagicError as error:
            # The conversation is intact: ChatSession records only finished turns.
            self._end_turn(FAILED, "".join(reply), str(error), error=True)
        except Exception as error:  # a bug: show it, and keep it for whoever awaits the turn
            log.exception("chat panel turn failed")
            self._end_turn(FAILED, "".join(reply), f"Unexpected error: {type(error).__name__}: {error}",
                           error=True)
            outcome = error
        else:
            if result.files is not None:  # not a chat turn: it joins the files made, not the history
                made = Draft(request.prompt, "", result.model, files=tuple(result.files))
                self.made = (*self.made, made)[-MAX_MADE:]
            self._end_turn("", result.text, _result_line(result))
            result.metrics = await self.session.reported_metrics(result)  # after the reply shows
            self._say(_result_line(result))
        finally:
            throttle.cancel()
            self._settle(finished, result, outcome)
        return result

    async def _compare(self, requests: Sequence[TurnRequest], labels: Sequence[str],
                       finished: concurrent.futures.Future[TurnResult | None]) -> TurnResult | None:
        """Every model at once, into the columns of ``comparison``; nothing is recorded."""
        run = SideBySide(self.session, requests, labels)
        feed = _ColumnsFeed(self)
        outcome: BaseException | None = None
        try:
            await run.run(feed)
        except asyncio.CancelledError:  # Stop: each model's stream has cancelled its prediction
            feed.close(lambda index: f"stopped: {run.outcomes[index].fate()}")
            self._say(f"Stopped: {run.fates()}; no reply was recorded.")
            raise
        except Exception as error:  # a bug: show it, and keep it for whoever awaits the turn
            log.exception("side-by-side panel turn failed")
            feed.close(lambda index: "stopped by an unexpected error")
            self._say(f"Unexpected error: {type(error).__name__}: {error}", error=True)
            outcome = error
        else:
            feed.close()
            replied = sum(done.result is not None for done in run.outcomes)
            self._say(f"{replied} of {len(labels)} models replied (each column has its metrics); "
                      "no reply was recorded", error=not replied)
        finally:
            self._settle(finished, None, outcome)
        return None

    def _end_turn(self, note: str, reply: str, status: str, error: bool = False) -> None:
        if note:
            if self.draft is not None:
                self.draft = replace(self.draft, reply=reply, note=note)
        else:
            self.draft = None  # the turn is in the history now
        self.refresh()
        self._say(status, error=error)

    def _settle(
        self, finished: concurrent.futures.Future[TurnResult | None], result: TurnResult | None,
        outcome: BaseException | None,
    ) -> None:
        with self._lock:
            if self._clear_when_stopped:
                self._clear_when_stopped = False
                self._reset_conversation()
            self.busy = False
        # Last, so that whoever awaits the turn sees the panel ready for the next one.
        if outcome is not None:
            finished.set_exception(outcome)
        else:
            finished.set_result(result)

    # -- helpers ---------------------------------------------------------------------------

    def _models(self) -> tuple[str, ...] | None:
        """The model, then those to compare it with; None (the status says why) when they clash."""
        others = [name.strip() for name in self.compare_with.split(",") if name.strip()]
        if not others:  # one model: any mistake in its name is the turn's to report
            return (self.model_name,)
        try:
            return model_names([self.model_name or resolve_model(None), *others])
        except ValueError as error:
            self._say(f"Compare with: {error}", error=True)
            return None

    def _request(self, prompt: str) -> TurnRequest:
        # The controls are the request's own settings; the box's text becomes the
        # conversation's system prompt (on success), "" clears it.
        asked = CellOptions(chat=self.chat, temperature=self.temperature, max_tokens=self.max_tokens,
                            system=self.system_prompt)
        configured = Configured(model=self.model_name, max_history=self.max_history,
                                default_inputs=self.default_inputs, timeout=self.timeout,
                                connect_timeout=self.connect_timeout)
        request = build_request(prompt, asked, configured)
        # The sliders always hold a value: a model that takes none of them (an image model)
        # is asked without them, and the line under its reply does not list them.
        settings = replace(request.settings, unsaid=frozenset({"temperature", "max_tokens"}),
                           images=tuple(self.attachments) or request.settings.images)
        return replace(request, settings=settings)

    def _reset_conversation(self) -> None:
        problems = self.session.reset(self.chat)
        self.draft = None
        self.comparison = None
        self.refresh()
        self._say(" · ".join([f"Conversation {self.chat!r} is empty now.", *problems]))

    def _say(self, text: str, error: bool = False) -> None:
        with self.hold_trait_notifications():
            self.status = text
            self.error = error

    @observe("chat")
    def _on_chat_changed(self, change: dict[str, Any]) -> None:
        self.draft = None
        self.comparison = None
        self.refresh()

    @validate("chat")
    def _valid_chat(self, proposal: dict[str, Any]) -> str:
        return proposal["value"].strip() or "default"


def _result_line(result: TurnResult) -> str:
    return " · ".join(result_notes(result))


class _ColumnsFeed:
    """Keeps ``PanelModel.comparison`` current while the models stream (a ``compare.Listener``):
    one throttle for all the columns, so the widget gets at most a frame's worth of updates."""

    def __init__(self, model: PanelModel) -> None:
        assert model.comparison is not None
        self._model = model
        self._columns = list(model.comparison.columns)
        self._texts = [TextParts() for _ in self._columns]
        self._throttle = FrameThrottle(self._publish)

    def token(self, index: int, text: str) -> None:
        self._texts[index].append(text)
        self._throttle.changed()

    def status(self, index: int, line: str) -> None:
        if not self._texts[index]:  # boot logs matter only until the reply starts
            column = self._columns[index]
            self._columns[index] = replace(column, status=clean(line).strip()[:200] or column.status)
            self._throttle.changed()

    def replied(self, index: int, outcome: ModelOutcome) -> None:
        made = outcome.result.files if outcome.result is not None else None
        self._columns[index] = replace(self._columns[index], done=True, status="",
                                       files=None if made is None else tuple(made))
        self._throttle.changed()

    def ended(self, index: int, outcome: ModelOutcome) -> None:
        column = self._columns[index]
        if outcome.failure is not None:
            column = replace(column, note=outcome.failure, failed=True)
        elif outcome.result is not None:
            column = replace(column, note=" · ".join(result_notes(outcome.result, outcome.metrics)))
        self._columns[index] = replace(column, done=True, status="")
        self._throttle.changed()

    def close(self, stopped: Callable[[int], str] | None = None) -> None:
        """The last update; ``stopped(index)`` notes a column that never ended."""
        self._throttle.cancel()
        for index, column in enumerate(self._columns):
            if not column.note and stopped is not None:
                self._columns[index] = replace(column, note=stopped(index), status="", done=True)
        self._publish()

    def _publish(self) -> None:
        comparison = self._model.comparison
        if comparison is None:  # cleared meanwhile (Clear, another conversation)
            return
        columns = tuple(replace(c, reply=t.value) for c, t in zip(self._columns, self._texts, strict=True))
        self._model.comparison = replace(comparison, columns=columns)
