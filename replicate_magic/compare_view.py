"""``%%replicate -m A -m B``: the replies side by side, streaming together. IPython glue.

``CompareView`` is ONE output area holding a row of columns (``render.columns_html``), each
with its model's reply and its own metrics line or error. One ``FrameThrottle`` serves the
whole row, so however many models stream, the frontend gets at most ``FRAME_RATE`` updates a
second in all; the final update holds every reply whole, which is what a saved notebook
keeps. In terminal IPython each reply is printed whole when its model is done, under a
header line with the model's name, so replies never interleave. ``compare`` runs the cell:
the engine and the history rule are in compare.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .cancels import REPORT_WAIT
from .compare import ModelOutcome, SideBySide, history_note
from .display import FRAME_RATE, FrameThrottle, result_notes
from .errors import ReplicateMagicError, ReplyInterrupted, UnexpectedError
from .render import Column, ShownFile, StreamingMarkdown, columns_html, files_html, markdown_html, plain_html
from .terminal import clean
from .textparts import TextParts

if TYPE_CHECKING:
    from .magics import ReplicateMagics
    from .options import CellOptions
    from .prompt_template import Expansion
    from .request import TurnRequest

__all__ = ["CompareView", "compare"]



@dataclass
class _Column:
    """One model's part of the view."""

    label: str
    status: str = ""  # stands in the column until the first token
    note: str = ""  # the line under the reply: metrics, an error, how it was stopped
    failed: bool = False
    files: Sequence[ShownFile] | None = None  # a model that makes files: what it made
    complete: bool = False  # the reply is whole: rendered once more, in full, and kept
    printed: bool = False  # terminal: its block is out
    text: TextParts = field(default_factory=TextParts)
    markdown: StreamingMarkdown = field(default_factory=StreamingMarkdown)
    _shown: tuple[Any, ...] = ()  # what the cached rendering was made from
    _html: str = ""

    def body_html(self, fmt: str) -> str:
        key = (len(self.text.value), self.status, self.complete, self.files is None)
        if key != self._shown:  # most frames change one column: the others keep their rendering
            self._shown, self._html = key, self._render(fmt)
        return self._html

    def _render(self, fmt: str) -> str:
        text = self.text.value
        if self.files is not None:
            return files_html(self.files) if self.files else plain_html("the model made no files")
        if not text:
            return plain_html(self.status) if self.status else ""
        if fmt != "markdown":
            return plain_html(text, css="rm-plain", style="span")
        return markdown_html(text) if self.complete else self.markdown.render(text)

    def plain(self) -> str:
        listed = [f"[{clean(item.summary())}]" for item in self.files or ()]
        lines = [f"── {clean(self.label)} ──", self.text.value or (f"[{self.status}]" if self.status else ""),
                 *listed, f"[{self.note}]" if self.note else ""]
        return "\n".join(line for line in lines if line)


class CompareView:
    """The row of columns; the ``compare.Listener`` of a ``SideBySide`` run.

    Its listener methods come from the streaming loop's thread; ``finish`` from the kernel's.
    """

    def __init__(self, labels: Sequence[str], fmt: str = "markdown", *, rich: bool = True,
                 frame_rate: float = FRAME_RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self.fmt = fmt
        self.rich = rich
        self.columns = [_Column(label, status=f"asking {label}…") for label in labels]
        self.note = ""  # under the columns: what was sent, what was recorded
        self.updates = 0  # display messages sent, for tests and benchmarks
        self._throttle = FrameThrottle(self._publish_frame, frame_rate, clock)
        self._handle: Any = None
        self._closed = False
        self._lock = threading.Lock()  # the kernel thread finishes while the loop may publish

    def start(self, note: str = "") -> None:
        """Show the columns, each saying which model it asks."""
        self.note = note
        if self.rich:
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
            self.updates += 1
        else:
            names = ", ".join(clean(column.label) for column in self.columns)
            sys.stderr.write(f"[asking {names} side by side…]\n")
            sys.stderr.flush()

    # -- the listener (the loop's thread) -------------------------------------------------------

    def token(self, index: int, text: str) -> None:
        self.columns[index].text.append(text)
        self._changed()

    def status(self, index: int, line: str) -> None:
        column = self.columns[index]
        if not column.text:  # a model's boot logs matter until its reply starts
            column.status = " ".join(clean(line).split())[:200] or column.status
            self._changed()

    def replied(self, index: int, outcome: ModelOutcome) -> None:
        column = self.columns[index]
        result = outcome.result
        if result is not None and result.files is not None:
            column.text.value = ""  # the URLs a stream may have shown: the files stand there now
            column.files = result.files
        column.complete, column.status = True, "" if column.text or column.files is not None else "empty reply"
        self._changed()

    def ended(self, index: int, outcome: ModelOutcome) -> None:
        column = self.columns[index]
        column.complete = True
        if outcome.failure is not None:
            column.note, column.failed, column.status = outcome.failure, True, ""
        elif outcome.result is not None:
            notes = result_notes(outcome.result, outcome.metrics) if outcome.metrics is not None \
                else list(outcome.result.adjusted)
            column.note = " · ".join(notes)
        if self.rich:
            self._changed()
        else:
            self._print(column)

    # -- the end (the kernel's thread) --------------------------------------------------------

    def finish(self, stopped: Callable[[int], str] | None = None) -> None:
        """The last update, every reply whole; ``stopped(index)`` notes a column that never ended."""
        with self._lock:
            self._closed = True
            self._throttle.cancel()
        for index, column in enumerate(self.columns):
            if not column.note and stopped is not None:
                column.note, column.status = stopped(index), ""
            column.complete = True
        if self.rich:
            self._publish(self._bundle(), final=True)
            return
        for column in self.columns:
            self._print(column)
        if self.note:
            print(clean(self.note))

    # -- showing ------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.rich:
            self._throttle.changed()

    def _publish_frame(self) -> None:
        self._publish(self._bundle())

    def _bundle(self) -> dict[str, str]:
        columns = [Column(c.label, c.body_html(self.fmt), c.note, c.failed) for c in self.columns]
        plain = "\n\n".join([*(column.plain() for column in self.columns), *([f"[{self.note}]"] if self.note else [])])
        return {"text/plain": plain, "text/html": columns_html(columns, self.note)}

    def _publish(self, data: dict[str, str], final: bool = False) -> None:
        with self._lock:
            if self._closed and not final:
                return
            self.updates += 1
            if self._handle is not None:
                self._handle.update(data, raw=True)

    def _print(self, column: _Column) -> None:
        """A terminal's block: the header, the whole reply, its files and its line."""
        with self._lock:
            if column.printed:
                return
            column.printed = True
            lines = [f"── {clean(column.label)} ──"]
            if column.text:
                lines.append(clean(column.text.value))
            lines += [clean(item.listing()) for item in column.files or ()]
            if column.note:
                lines.append(f"[{clean(column.note)}]")
            sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()


# -- the cell ----------------------------------------------------------------------------------


def compare(magics: ReplicateMagics, options: CellOptions, prompt: str, expansion: Expansion) -> None:
    """Ask every model of ``options.models`` at once and show the replies side by side.

    ``-o`` gets a dict model -> reply (None for one that failed). One model's failure is its
    column's; the cell fails only when every model failed. An interrupt cancels them all.
    """
    from .loop import shared_loop

    if options.new:
        raise UsageError("--new starts the conversation afresh, but side by side no reply is recorded: "
                         "use --no-history to send none")
    requests = _requests(magics, options, prompt)
    session = magics.chat_session()
    run = SideBySide(session, requests, options.models, metrics=magics.show_metrics)
    view = CompareView(options.models, options.format or magics.output_format, rich=magics.rich_output())
    view.start(" · ".join([history_note(session, requests[0]), *expansion.lines()]))
    try:
        shared_loop().run(run.run(view))
    except KeyboardInterrupt:
        _interrupted(run, view)
    except Exception as error:  # a bug: the area still ends, the message is one line
        view.finish(lambda index: "stopped by an unexpected error")
        raise UnexpectedError(
            f"Unexpected {type(error).__name__}: {error}. The conversation is unchanged; "
            "this is a bug in replicate_magic (the traceback is in the kernel's log)."
        ) from None
    view.finish()
    if options.out:
        magics.user_namespace()[options.out] = run.values()
    _fail_if_all_failed(run)


def _requests(magics: ReplicateMagics, options: CellOptions, prompt: str) -> list[TurnRequest]:
    """One request per model, alike but for the model; files are read once, for all of them,
    so a bad -i @PATH fails the cell before anything is sent."""
    from .request import Configured, build_request

    configured = Configured.of(magics)
    cell_id = magics._turn_key()  # one key for the cell: the log files each model's exchange under it
    requests = [build_request(prompt, replace(options, models=(name,)), configured, cell_id=cell_id,
                              notebook=magics.notebook_path()) for name in options.models]
    settings = magics.with_files(requests[0]).settings
    return [replace(request, settings=settings) for request in requests]


def _interrupted(run: SideBySide, view: CompareView) -> None:
    """Say in one line what became of each model, and end the cell."""
    deadline = time.monotonic() + REPORT_WAIT
    for outcome in run.outcomes:
        outcome.stops.wait(max(0.0, deadline - time.monotonic()))

    def note(index: int) -> str:  # for a column that had not ended
        fate = run.outcomes[index].fate()
        return "complete; interrupted before its metrics came" if fate == "complete" else f"interrupted: {fate}"

    view.finish(note)
    raise ReplyInterrupted(
        f"Interrupted: {run.fates()}; the partial answers stay above, the conversation is unchanged."
    ) from None


def _fail_if_all_failed(run: SideBySide) -> None:
    """No reply at all: the cell fails (Run All stops), in one line; each column says why."""
    errors = [outcome.error for outcome in run.outcomes]
    if not all(errors):
        return
    first = errors[0]
    summary = f"Every model failed (each column says why); {run.outcomes[0].label}: {run.outcomes[0].failure}"
    if isinstance(first, ReplicateMagicError):
        first.args = (summary,)
        raise first
    raise UnexpectedError(summary)


