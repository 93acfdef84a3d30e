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
from dataclasses import dataclass, replace
from typing import Any

from traitlets import Bool, HasTraits, Instance, Tuple, Unicode, observe, validate

from .cancels import StopReport
from .chat import ChatSession, TurnResult
from .display import FrameThrottle, result_notes
from .errors import ReplicateMagicError
from .files import FileOutput
from .loop import shared_loop
from .options import CellOptions
from .request import Configured, TurnRequest, build_request
from .terminal import clean
from .traits import setting_trait

__all__ = ["Draft", "PanelModel"]

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
            request = self._request(prompt)
            self.attachments = ()  # sent with this message only, as the prompt box's text
            self.busy = True
            self._finished = concurrent.futures.Future()
            self.draft = Draft(prompt, "", request.model)
            self._say(f"asking {request.model}…")
            try:
                self._task = shared_loop().submit(self._run(request, self._finished))
            except BaseException:
                self.busy = False
                raise
            return self._finished

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

    def _request(self, prompt: str) -> TurnRequest:
        # The controls are the request's own settings; the box's text becomes the
        # conversation's system prompt (on success), "" clears it.
        asked = CellOptions(chat=self.chat, temperature=self.temperature, max_tokens=self.max_tokens,
                            system=self.system_prompt)
        configured = Configured(model=self.model_name, max_history=self.max_history,
                                default_inputs=self.default_inputs, timeout=self.timeout,
                                connect_timeout=self.connect_timeout)
        request = build_request(prompt, asked, configured)
        if not self.attachments:
            return request
        return replace(request, settings=replace(request.settings, images=tuple(self.attachments)))

    def _reset_conversation(self) -> None:
        problems = self.session.reset(self.chat)
        self.draft = None
        self.refresh()
        self._say(" · ".join([f"Conversation {self.chat!r} is empty now.", *problems]))

    def _say(self, text: str, error: bool = False) -> None:
        with self.hold_trait_notifications():
            self.status = text
            self.error = error

    @observe("chat")
    def _on_chat_changed(self, change: dict[str, Any]) -> None:
        self.draft = None
        self.refresh()

    @validate("chat")
    def _valid_chat(self, proposal: dict[str, Any]) -> str:
        return proposal["value"].strip() or "default"


def _result_line(result: TurnResult) -> str:
    return " · ".join(result_notes(result))

