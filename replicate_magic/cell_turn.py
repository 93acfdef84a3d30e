"""One turn of a cell, as the user sees it: run on the private loop, finished in one line. Glue.

``run_turn`` runs a ``ChatSession`` turn into a ``LiveReply`` and makes every way it can end
end cleanly: an interrupt says what became of the cancel, our errors and any bug finish the
area and are one line, and the partial answer stays. ``show_result_line`` puts the line
under the reply (metrics, what was expanded, what was adjusted). The magic, ``%replicate
fix`` and ``replicate_magic.ask`` use them through ``ReplicateMagics._ask``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .cancels import REPORT_WAIT, StopReport
from .display import LiveReply, result_notes, show_line
from .errors import ReplicateMagicError, ReplyInterrupted, UnexpectedError
from .loop import shared_loop
from .prompt_template import Expansion

if TYPE_CHECKING:
    from .chat import Metrics, TurnResult
    from .magics import ReplicateMagics
    from .request import TurnRequest

__all__ = ["run_turn", "show_result_line"]

log = logging.getLogger("replicate_magic.magics")  # where a turn's unexpected failure was logged before


def run_turn(magics: ReplicateMagics, request: TurnRequest, reply: LiveReply) -> tuple[TurnResult, Metrics | None]:
    """The turn on the private loop; any failure finishes the area and is one line."""

    session = magics.chat_session()
    answered: list[TurnResult] = []  # set once the reply is complete and recorded
    stops = StopReport()  # what became of any cancel this turn needed: told, never assumed

    async def turn() -> Metrics | None:
        with stops.watching():
            result = await session.ask(request, on_token=reply.append, on_log=reply.status,
                                       on_retry=lambda reason: _asking_again(reply, reason))
        answered.append(result)
        # The whole reply shows now; the metrics request is already under way.
        if result.files is not None:
            reply.text = ""  # the URLs a stream may have shown: the files themselves stand there now
            reply.finish("" if result.files else "the model made no files", files=result.files)
        else:
            reply.finish("" if result.text else "empty reply: the model sent no text")
        return await session.reported_metrics(result) if magics.show_metrics else None

    stopped = "stopped by the error below; this turn is not in the history"
    try:
        metrics = shared_loop().run(turn())
    except KeyboardInterrupt:
        if answered:  # the reply is complete and recorded: skip the nicety
            return answered[0], answered[0].metrics
        stops.wait(REPORT_WAIT)
        what = stops.message()
        reply.finish(f"interrupted: {what}; this turn is not in the history")
        raise ReplyInterrupted(
            f"Interrupted: the reply stopped ({what}); "
            "the partial answer stays above, the conversation is unchanged."
        ) from None
    except ReplicateMagicError as error:
        stops.wait(REPORT_WAIT)
        failed = [o.message() for o in stops.outcomes if not o.cancelled]
        reply.finish(stopped if reply.text else "no reply")
        if failed:  # a stall or a broken stream needed a cancel, and it did not go through
            error.args = (f"{error} Also: {'; '.join(failed)}.",)
        raise
    except Exception as error:  # a bug: the area still ends, the message is one line
        log.exception("a %%replicate turn failed unexpectedly")
        reply.finish(stopped if reply.text else "no reply")
        raise UnexpectedError(
            f"Unexpected {type(error).__name__}: {error}. The conversation is unchanged; "
            "this is a bug in replicate_magic (the traceback is in the kernel's log)."
        ) from None
    return answered[0], metrics

def show_result_line(result: TurnResult, metrics: Metrics | None, expansion: Expansion,
                     reply: LiveReply, said: list[str] | None = None) -> None:

    notes = result_notes(result, metrics) if metrics is not None else list(result.adjusted)
    notes += expansion.lines()  # expanded, withheld, described or cut, --context, a template
    notes += said or []  # -f code: where the code went
    if notes:
        show_line(" · ".join(notes), reply.fmt, rich=reply.rich)


def _asking_again(reply: LiveReply, reason: str) -> None:
    """A JSON answer was invalid and is asked for again: the new one replaces it on screen (in a
    terminal, where printed text stays, it follows on a line of its own)."""
    if not reply.rich and reply.text:
        print(flush=True)
    reply.text = ""
    reply.status(f"the answer was not valid ({reason}); asking again…")
