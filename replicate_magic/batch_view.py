"""A batch's progress as the user sees it: one live line in a notebook, a text line in a terminal.

The notebook's area is updated at most ``RATE`` times a second whatever the batch's pace
(a timer on the loop publishes what a skipped update held back), and says done / total,
failed, in flight, tokens a second, elapsed, ETA and the cost so far where known, with
the latest finished item. A terminal gets the same line on standard error, at most once a
second. The summary line at the end names each failure with its one-line reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from .batch import ItemOutcome, Progress
from .display import FrameThrottle
from .pricing import format_cost_amount
from .render import inline_html, plain_html
from .terminal import clean

__all__ = ["BatchView", "progress_line", "summary_line"]

RATE = 4.0  # updates a second: a progress line is read, not watched frame by frame
_TERMINAL_EVERY = 1.0
_LATEST_CHARS = 160
_FAILURES_SHOWN = 10


def progress_line(progress: Progress) -> str:
    """``37/100 done · 1 failed · 8 in flight · 412 tokens/s · 12 s · ETA 20 s · ≈ $0.0123``."""
    parts = [f"{progress.done + progress.failed}/{progress.total} done"]
    if progress.failed:
        parts.append(f"{progress.failed} failed")
    parts.append(f"{progress.in_flight} in flight")
    if progress.replayed:
        parts.append(f"{progress.replayed} from the log")
    elapsed = progress.elapsed
    if progress.tokens and elapsed > 0:
        parts.append(f"{progress.tokens / elapsed:.0f} tokens/s")
    parts.append(f"{elapsed:.0f} s")
    if progress.eta is not None:
        parts.append(f"ETA {progress.eta:.0f} s")
    if progress.cost is not None and progress.cost > 0:
        parts.append(format_cost_amount(progress.cost))
    return " · ".join(parts)


def summary_line(progress: Progress, outcomes: Sequence[ItemOutcome], interrupted: str = "",
                 notes: Sequence[str] = ()) -> str:
    """The line under a finished (or interrupted) batch: what it did, each failure, and
    ``notes`` (a placeholder withheld, say)."""
    finished = progress.done + progress.failed
    head = [f"{progress.done} of {progress.total} answered"]
    if progress.replayed:
        head.append(f"{progress.replayed} replayed from the log")
    if progress.failed:
        head.append(f"{progress.failed} failed")
    if interrupted:
        head.append(f"interrupted after {finished}: {interrupted}")
    head.append(f"{progress.elapsed:.1f} s")
    if progress.tokens:
        head.append(f"{progress.tokens} tokens")
    if progress.cost is not None and progress.cost > 0:
        head.append(format_cost_amount(progress.cost))
    failures = [o for o in outcomes if o.error is not None]
    named = [f"{o.key!r}: {o.error}" for o in failures[:_FAILURES_SHOWN]]
    if len(failures) > _FAILURES_SHOWN:
        named.append(f"and {len(failures) - _FAILURES_SHOWN} more (see .errors)")
    logged = "".join(f". The log: {problem}" for problem in progress.log_problems)
    noted = "".join(f". Note: {note}" for note in notes)
    return " · ".join(head) + ("" if not named else ". Failed: " + "; ".join(named)) + logged + noted


class BatchView:
    """The live progress of one batch; ``changed`` may be called as often as items move."""

    def __init__(self, *, rich: bool) -> None:
        self.rich = rich
        self._handle: Any = None
        self._progress: Progress | None = None
        self._throttle = FrameThrottle(self._publish, RATE)
        self._told_at = 0.0
        self.updates = 0

    def start(self, total: int, what: str) -> None:
        line = f"asking {what} for {total} item" + ("" if total == 1 else "s") + "…"
        if self.rich:
            from IPython.display import display

            self._handle = display(_bundle(line), raw=True, display_id=True)
            self.updates += 1
        else:
            sys.stderr.write(f"[{clean(line)}]\n")
            sys.stderr.flush()

    def changed(self, progress: Progress) -> None:
        self._progress = progress
        if self.rich:
            self._throttle.changed()
        elif time.monotonic() - self._told_at >= _TERMINAL_EVERY:
            self._told_at = time.monotonic()
            sys.stderr.write(f"[{progress_line(progress)}]\n")
            sys.stderr.flush()

    def finish(self, summary: str) -> None:
        """Replaces the live line with the summary (a saved notebook keeps this)."""
        self._throttle.cancel()
        if self.rich:
            if self._handle is not None:
                self._handle.update(_bundle(summary), raw=True)
                self.updates += 1
        else:
            sys.stderr.write(f"[{clean(summary)}]\n")
            sys.stderr.flush()

    def _publish(self) -> None:
        if self._progress is None or self._handle is None:
            return
        progress = self._progress
        line = progress_line(progress)
        latest = progress.latest
        extra = ""
        if latest is not None:
            said = latest.text if latest.text is not None else f"failed: {latest.error}"
            said = " ".join(said.split())
            extra = f"latest, {latest.key!r}: " + (said[:_LATEST_CHARS] + ("…" if len(said) > _LATEST_CHARS else ""))
        self._handle.update(_bundle(line, extra), raw=True)
        self.updates += 1


def _bundle(line: str, extra: str = "") -> dict[str, str]:
    plain = line + (f"\n{extra}" if extra else "")
    html = plain_html(line, css="rm-status", style="span")
    if extra:
        html += f'<p class="rm-note mathjax_ignore"><em>{inline_html(extra)}</em></p>'
    return {"text/plain": clean(plain), "text/html": html}
