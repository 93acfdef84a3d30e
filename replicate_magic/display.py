"""Show a streaming reply: one output area updated at a frame rate, or plain text in a terminal.

Updates are coalesced (at most ``FRAME_RATE`` a second, whatever the token rate) so a fast
model never floods the browser; a timer on the streaming loop publishes what a skipped
update held back, so nothing waits for the next token; the final update carries the whole
text, which is what a saved notebook keeps. Outputs are mimebundles: ``text/html`` made by
the one renderer (render.py: raw HTML in a reply is text, never markup) for notebooks,
``text/plain`` for everything else, without control characters where a terminal shows it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .render import ShownFile, StreamingMarkdown, files_html, markdown_html, plain_html
from .terminal import TerminalSanitizer, clean
from .textparts import TextParts

if TYPE_CHECKING:
    from .chat import Metrics, TurnResult

FRAME_RATE = 25.0
SLOW_FRAME_FACTOR = 4.0  # a frame that costs t waits at least 4t: frames use at most ~20% of a core


def bundle(text: str, fmt: str, aside: str = "", *, html: str | None = None,
           files: Sequence[ShownFile] = ()) -> dict[str, str]:
    """The reply as a mimebundle; ``aside`` (a status or a note) shows in italics under it,
    ``files`` (a model's output files) above that, as a grid.

    ``html`` is the reply already rendered (a frame of a stream); by default it is rendered here.
    The files are embedded whatever ``fmt`` says: text/plain cannot hold an image.
    """
    listed = "\n".join(f"[{clean(item.summary())}]" for item in files)
    plain = "\n\n".join(part for part in (text, listed, f"[{aside}]" if aside else "") if part)
    data = {"text/plain": plain}
    if fmt == "markdown" or files:
        body = (markdown_html(text) if html is None else html) if text and fmt == "markdown" else (
            plain_html(text, css="rm-plain", style="span") if text else "")
        data["text/html"] = body + (files_html(files) if files else "") + (plain_html(aside) if aside else "")
    return data


class FrameThrottle:
    """Calls ``publish`` at most ``rate`` times a second, however often ``changed`` is called.

    A change that comes too soon arms one timer on the running loop, which publishes the
    latest state, so nothing waits for the next token. A publish that takes long (rendering
    one huge paragraph) stretches the wait after it to ``SLOW_FRAME_FACTOR`` times its cost,
    so frames never take more than a bounded share of a core. Calls come from that loop's
    thread (``cancel`` may come from another once the loop is done with this throttle).
    """

    def __init__(
        self, publish: Callable[[], None], rate: float = FRAME_RATE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._publish = publish
        self._interval = 1.0 / rate
        self._clock = clock
        self._last = float("-inf")
        self._cost = 0.0  # how long the last publish took
        self._timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        if self._timer is not None:
            return  # the armed timer will show this change too
        wait = self._last + max(self._interval, SLOW_FRAME_FACTOR * self._cost) - self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: show it now
            wait = 0
        if wait <= 0:
            self._fire()
        else:
            self._timer = loop.call_later(wait, self._fire)

    def cancel(self) -> None:
        """Drop a pending publish (the caller shows the final state itself)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        started = self._clock()
        self._publish()
        # Counted from the end of the publish: a slow frame (the first one imports the
        # renderer) must not let the next one follow it at once.
        self._last = self._clock()
        self._cost = self._last - started


class LiveReply:
    """The output area of one reply. ``append`` may be called from the streaming loop's thread."""

    def __init__(
        self,
        fmt: str = "markdown",
        *,
        rich: bool = True,
        frame_rate: float = FRAME_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fmt = fmt
        self.rich = rich
        self._text = TextParts()
        self._markdown = StreamingMarkdown()  # a frame re-renders only the blocks still open
        self.updates = 0  # display messages sent, for tests and benchmarks
        self._throttle = FrameThrottle(self._publish_frame, frame_rate, clock)
        self._handle: Any = None
        self._status = ""
        self._closed = False
        self._lock = threading.Lock()  # the kernel thread finishes while the loop may flush
        self._terminal = TerminalSanitizer()  # plain text: a control sequence may span tokens
        self._told = ""  # the last status line a terminal was told

    @property
    def text(self) -> str:
        """The text so far."""
        return self._text.value

    @text.setter
    def text(self, value: str) -> None:
        self._text.value = value

    def start(self, status: str = "") -> None:
        """Show the (empty) area; ``status`` stands in it until the first token."""
        self._status = status
        if self.rich:
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
            self.updates += 1
        else:
            self._tell_terminal(status)

    def status(self, line: str) -> None:
        """A progress line (e.g. the model's boot logs), shown only while no text has come."""
        if self._text:
            return
        if self.rich:
            self._status = clean(line)  # a model's boot output: no control characters
            self._throttle.changed()
        else:
            self._tell_terminal(line)

    def _tell_terminal(self, line: str) -> None:
        # On standard error, a line each (a repeat once): the reply alone goes to stdout.
        line = " ".join(clean(line).split())[:200]
        if line and line != self._told:
            self._told = line
            sys.stderr.write(f"[{line}]\n")
            sys.stderr.flush()

    def append(self, token: str) -> None:
        self._text.append(token)
        if not self.rich:
            sys.stdout.write(self._terminal.feed(token))
            sys.stdout.flush()
            return
        self._throttle.changed()

    def finish(self, note: str = "", files: Sequence[ShownFile] = ()) -> None:
        """The last update: the whole text and any output files, with an optional note
        (interrupted, failed). Files replace the status that stood in for them."""
        with self._lock:
            self._closed = True
            self._throttle.cancel()
        if self.rich:
            self._publish(bundle(self.text, self.fmt, note, files=files), final=True)
        else:
            listed = "".join(f"[{clean(item.listing())}]\n" for item in files)
            ending = (f"\n\n[{note}]" if note else "") + ("\n" if note or self.text else "")
            sys.stdout.write(self._terminal.flush() + ending + listed)
            sys.stdout.flush()

    def _publish_frame(self) -> None:
        self._publish(self._bundle())

    def _bundle(self) -> dict[str, str]:
        # The status stands in the area only until the first token arrives.
        text = self.text
        html = self._markdown.render(text) if self.fmt == "markdown" and text else None
        return bundle(text, self.fmt, "" if text else self._status, html=html)

    def _publish(self, data: dict[str, str], final: bool = False) -> None:
        with self._lock:
            if self._closed and not final:
                return
            self.updates += 1
            if self._handle is not None:
                self._handle.update(data, raw=True)


def show_line(text: str, fmt: str, *, rich: bool) -> None:
    """A small one-off line under a reply (the metrics)."""
    if rich:
        from IPython.display import display

        data = {"text/plain": text}
        if fmt == "markdown":
            data["text/html"] = plain_html(text, css="rm-metrics", style="sub")
        display(data, raw=True)
    else:
        print(clean(text))


def result_notes(result: TurnResult, metrics: Metrics | None = None) -> list[str]:
    """The line under a reply, in parts: metrics, settings not taken, settings adjusted (
    "temperature 0 raised to 0.01, the lowest this model takes"), a replay, the log's failures."""
    notes = [(metrics or result.metrics).line()]
    if result.ignored:
        notes.append(f"not taken by this model: {', '.join(result.ignored)}")
    notes += result.adjusted
    if result.replayed:
        notes.append(f"replayed from the log, {result.replayed}: nothing was asked or billed")
    return notes + [f"warning: {problem}" for problem in result.problems]
