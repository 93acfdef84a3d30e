"""``%%replicate --each`` in real kernels, as a notebook runs it (issue 12).

One live progress area, updated a few times a second; an interrupt cancels exactly the
predictions in flight on Replicate, and what finished before it stays in ``-o``.
"""

from __future__ import annotations

import itertools
import time

from replicate_magic.emulator import Faults

from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import html, plain


def _progress(cell) -> list[str]:
    return [plain(m) for m in cell.of_type("display_data", "update_display_data")]


def test_progress_is_one_area_updated_a_few_times_a_second(kernel, emu):
    kernel.ok("items = [f'item {n}' for n in range(24)]")
    emu.inject(Faults(tokens_per_second=60))
    cell = kernel.ok("%%replicate --each items -o out --concurrency 6\nSay {item}")
    shown = cell.of_type("display_data", "update_display_data")
    assert len(cell.display_ids()) == 1  # one area, updated in place
    assert any("/24 done · " in plain(m) and " in flight" in plain(m) for m in shown)
    assert plain(shown[-1]).startswith("24 of 24 answered")
    updates = [m for m in shown if m.type == "update_display_data"]
    frames = updates[:-1]  # the last one is the summary, which may follow a frame at once
    gaps = [(b.sent - a.sent).total_seconds() for a, b in itertools.pairwise(frames)]
    assert gaps and min(gaps) >= 0.2, sorted(gaps)[:3]  # at most ~4 a second, whatever the pace
    assert kernel.eval("sum(v is not None for v in out)") == 24
    assert all("rm-status" in html(m) for m in shown)


def test_an_interrupt_cancels_exactly_the_items_in_flight_and_keeps_the_finished(kernel, emu):
    # The first item is answered at once; the others take 30 s each (a marker the emulator reads).
    kernel.ok("items = ['fast'] + [f'slow {n} [[emulator:slow=30]]' for n in range(9)]")
    cell = kernel.send("%%replicate --each items -o out --concurrency 3\nSay {item}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(" 1/10 done" in s or "1/10 done" in s for s in _progress(cell)):
        kernel._drain(0.05)
    time.sleep(0.3)
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    assert cell.status == "error" and cell.reply["ename"] == "ReplyInterrupted"
    cancelled = {emu.wait_for_cancel() for _ in range(3)}
    running = {pid for pid, p in emu.predictions.items() if p.status in ("canceled",)}
    assert cancelled == running and len(cancelled) == 3
    assert len(emu.predictions) == 4  # the finished one, and three in flight: nothing created after
    finished = kernel.eval("[v is not None for v in out]")
    assert finished == [True] + [False] * 9
    assert "interrupted after 1" in plain(cell.of_type("display_data", "update_display_data")[-1])
    # The finished item is in the log the moment the cell has ended (a batch's exchanges are
    # written together, and an interrupt writes them first); those cut off are logged as such.
    logged = kernel.eval("sorted((e['prompt'], e['status']) for e in __import__('replicate_magic').log())")
    assert ("Say fast", "succeeded") in logged
    assert sorted(status for _, status in logged) == ["interrupted"] * 3 + ["succeeded"], logged


def test_ask_and_map_show_live_in_a_notebook_and_return_the_replies(kernel, emu):
    cell = kernel.ok("import replicate_magic\nreply = replicate_magic.ask('Hello from Python', no_history=True)")
    (prediction,) = [p for p in emu.predictions.values() if p.input.get("prompt") == "Hello from Python"]
    assert kernel.eval("reply") == "".join(prediction.output)
    assert len(cell.display_ids()) == 1 and "".join(prediction.output) in plain(cell.outputs[-2])
    cell = kernel.ok("out = replicate_magic.map('Count {item}', [1, 2, 3])")
    assert plain(cell.of_type("display_data", "update_display_data")[-1]).startswith("3 of 3 answered")
    assert kernel.eval("len(out), out.errors") == (3, {})
