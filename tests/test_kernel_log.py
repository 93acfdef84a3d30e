"""The local log in real IPython kernels, driven over the Jupyter protocol like a notebook.

What a notebook user sees (the displayed outputs) and what the emulator received: a re-run
with ``--cache`` asks nothing and says so under the reply; ``--refresh`` asks again; a
restarted kernel restores a conversation from the log and sends it on; an interrupted reply
is never replayed; two kernels writing one log at once lose no row; a fresh kernel with no
token and no Replicate replays from the log with the schema the log kept.

Every test has a log file of its own (conftest's ``own_log``): the shared kernel is pointed
at it with ``%config ReplicateMagics.log_path``, the kernels a test starts get it as
``REPLICATE_MAGIC_DB`` (so it survives a restart). Real kernels, ipykernel 7 and 6.29.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from replicate_magic.emulator import Faults

from .conftest import TOKEN
from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import KernelSession, Request, html, plain

MARKER = re.compile(r"replayed from the log, \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC: nothing was asked or billed")

# -- helpers ---------------------------------------------------------------------------------------


def _reply_area(cell: Request) -> list:
    """The live reply's messages: the first display_data and the updates aimed at it."""
    first = cell.of_type("display_data")[0]
    display_id = first.content["transient"]["display_id"]
    updates = cell.of_type("update_display_data")
    return [first, *(m for m in updates if m.content["transient"]["display_id"] == display_id)]


def _reply(cell: Request) -> str:
    """The reply as it finally shows (text/plain of the area's last update)."""
    return plain(_reply_area(cell)[-1])


def _reply_html(cell: Request) -> str:
    return html(_reply_area(cell)[-1])


def _line(cell: Request) -> str:
    """The line under the reply: the cell's last output, outside the live area."""
    last = cell.outputs[-1]
    assert last.type == "display_data" and "display_id" not in last.content.get("transient", {}), last
    return plain(last)


def _shown(cell: Request) -> str:
    """Every text/plain and text/html the cell showed, and its stream text."""
    parts = []
    for message in cell.outputs:
        data = message.content.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", ""), message.content.get("text", "")]
    return "\n".join(parts)


def _creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def _output(emu, prediction_id: str) -> str:
    return "".join(emu.predictions[prediction_id].output)


def _log(kernel: KernelSession, n: int = 100) -> list[dict]:
    fields = "('prompt', 'status', 'replayed', 'prediction_id', 'chat')"
    return kernel.eval(f"[{{k: r[k] for k in {fields}}} for r in __import__('replicate_magic').log({n})]")


def _rows(path: Path) -> list[tuple]:
    """The log file's rows, read with SQLite directly (not through the package)."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT prompt, status, replayed FROM exchanges ORDER BY id").fetchall()


def _wait_for(kernel: KernelSession, condition, what: str, timeout: float = 10) -> None:
    """Poll ``condition`` while reading the kernel's messages (so none piles up)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        kernel._drain(0.02)


# -- 1, 2: replay on a re-run, and --refresh --------------------------------------------------------


def test_a_rerun_with_cache_asks_nothing_and_says_it_replayed(kernel, emu, own_log):
    kernel.ok("%replicate reset replay")
    cell = "%%replicate --cache -c replay\nName three tide pool animals."
    first = kernel.ok(cell, cell_id="cell-replay")
    (prediction_id,) = emu.predictions
    assert _reply(first) == _output(emu, prediction_id)
    assert not MARKER.search(_shown(first)) and "replayed" not in _shown(first)

    before = len(emu.requests)
    again = kernel.ok(cell, cell_id="cell-replay")  # the same cell, run again

    assert len(emu.requests) == before  # no create, no schema, no request of any kind
    assert len(emu.predictions) == 1
    assert _reply(again) == _reply(first)
    assert _reply_html(again) == _reply_html(first)
    assert MARKER.search(_line(again)), _line(again)  # on the line under the reply...
    assert MARKER.search(html(again.outputs[-1]))  # ...in the notebook's HTML too
    assert not again.of_type("execute_result")
    # The replay is a turn like any other: it replaced the cell's earlier one.
    assert len(kernel.eval("__import__('replicate_magic').history('replay')")) == 2
    # The reset at the start is marked (a later restore starts after it), then the two turns.
    assert [r[1:] for r in _rows(own_log)] == [("reset", 0), ("succeeded", 0), ("succeeded", 1)]


def test_refresh_sends_one_create_and_the_next_cache_replays_its_reply(kernel, emu):
    cell = "--no-history\nWhat lives under a rock?"
    kernel.ok(f"%%replicate --cache {cell}")
    assert len(_creates(emu)) == 1

    refreshed = kernel.ok(f"%%replicate --refresh {cell}")
    creates = _creates(emu)
    assert len(creates) == 2  # exactly one more: asked again although the log holds a reply
    assert creates[1].json["input"] == creates[0].json["input"]
    newest = list(emu.predictions)[-1]
    assert _reply(refreshed) == _output(emu, newest)
    assert "replayed" not in _shown(refreshed)

    replayed = kernel.ok(f"%%replicate --cache {cell}")
    assert len(_creates(emu)) == 2
    assert MARKER.search(_line(replayed))
    latest, from_refresh = _log(kernel, 2)
    assert latest["replayed"] and latest["prediction_id"] == newest  # the refreshed reply is the one replayed
    assert (from_refresh["replayed"], from_refresh["prediction_id"]) == (False, newest)


# -- 4: an interrupted turn is never replayed --------------------------------------------------------


def test_an_interrupted_reply_is_not_replayed(kernel, emu):
    cell = "%%replicate --cache --no-history\nA slow story, please."
    emu.inject(Faults(tokens_per_second=20))  # ~5 s of streaming
    interrupted = kernel.send(cell)
    _wait_for(kernel, lambda: emu.predictions and len(next(iter(emu.predictions.values())).output) >= 3,
                    "the slow reply to start streaming")
    kernel.interrupt()
    (stopped,) = emu.predictions
    assert emu.wait_for_cancel(timeout=10) == stopped
    kernel.wait(interrupted, timeout=15)
    assert interrupted.status == "error" and interrupted.reply["ename"] == "ReplyInterrupted"
    assert _log(kernel, 1)[0]["status"] == "interrupted"  # logged as it ended

    again = kernel.ok(cell)
    creates = _creates(emu)
    assert len(creates) == 2 and creates[1].json["input"] == creates[0].json["input"]  # asked anew
    newest = list(emu.predictions)[-1]
    assert newest != stopped and emu.predictions[newest].status == "succeeded"
    assert _reply(again) == _output(emu, newest)
    assert "replayed" not in _shown(again)

    third = kernel.ok(cell)  # now a complete reply is logged, and that one replays
    assert len(_creates(emu)) == 2 and MARKER.search(_line(third))
    assert _reply(third) == _reply(again)


# -- 3: a restarted kernel restores a conversation from the log ---------------------------------------


def test_after_a_restart_restore_sends_the_logged_turns(kernels, emu, own_log):
    kernel = kernels.start(REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url,
                           REPLICATE_MAGIC_DB=str(own_log))
    one = kernel.ok("%%replicate -c trip -s 'Be brief.'\nPlan a day at the coast.", cell_id="a")
    two = kernel.ok("%%replicate -c trip\nAnd if it rains?", cell_id="b")
    replies = [_reply(one), _reply(two)]
    assert "turn 2" in replies[1]
    pid = kernel.eval("__import__('os').getpid()")

    kernel.restart()

    assert kernel.eval("__import__('os').getpid()") != pid  # a new process...
    assert kernel.eval("'replicate_magic' in __import__('sys').modules") is False  # ...that remembers nothing
    kernel.ok("%load_ext replicate_magic")
    assert kernel.eval("__import__('replicate_magic').history('trip')") == []
    saved = kernel.ok("%replicate chats --saved")
    assert "trip: 2 turns" in plain(saved.of_type("execute_result")[0])
    restored = kernel.ok("%replicate restore trip")
    assert f"Restored conversation 'trip' (2 turns) from {own_log}." in restored.stdout

    before = len(_creates(emu))
    thanks = kernel.ok("%%replicate -c trip\nThanks!", cell_id="c")
    (create,) = _creates(emu)[before:]
    sent = create.json["input"]
    sent_text = sent.get("prompt", "") + repr(sent.get("messages", ""))
    for turn in ("Plan a day at the coast.", "And if it rains?", *replies):
        assert turn in sent_text, (turn, sent)
    assert sent["system_prompt"] == "Be brief."
    assert "turn 3" in _reply(thanks)  # the model saw two turns before this one
    history = kernel.eval("__import__('replicate_magic').history('trip')")
    assert [m["role"] for m in history] == ["system"] + ["user", "assistant"] * 3
    assert [m["content"] for m in history[1:5]] == ["Plan a day at the coast.", replies[0], "And if it rains?",
                                                    replies[1]]


# -- 5: two kernels, one log file, at once ----------------------------------------------------------


def test_two_kernels_writing_one_log_at_once_lose_no_row(kernels, emu, own_log):
    env = dict(REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url, REPLICATE_MAGIC_DB=str(own_log))
    a, b = kernels.start(**env), kernels.start(**env)
    assert not own_log.exists()  # both open a new file at the same moment, below
    count = 10
    cells = []
    for n in range(count):  # queued at once, interleaved: Run All in two notebooks
        cells.append(("A", n, a.send(f"%%replicate --no-history\nKernel A, question {n}.")))
        cells.append(("B", n, b.send(f"%%replicate --no-history\nKernel B, question {n}.")))
    a.wait(*[c for k, _, c in cells if k == "A"], timeout=60)
    b.wait(*[c for k, _, c in cells if k == "B"], timeout=60)

    def window(kernel: str) -> tuple:
        mine = [c for k, _, c in cells if k == kernel]
        busy = [m.sent for c in mine for m in c.of_type("status") if m.content["execution_state"] == "busy"]
        idle = [m.sent for c in mine for m in c.of_type("status") if m.content["execution_state"] == "idle"]
        return min(busy), max(idle)

    (start_a, end_a), (start_b, end_b) = window("A"), window("B")
    assert max(start_a, start_b) < min(end_a, end_b), "the two kernels did not run at the same time"

    for writer, n, cell in cells:
        assert cell.status == "ok", (writer, n, cell.reply)
        assert not cell.stderr, (writer, n, cell.stderr)
        shown = _shown(cell)
        assert "locked" not in shown and "warning" not in shown and "not logged" not in shown, shown
    asked = {f"Kernel {k}, question {n}." for k, n, _ in cells}
    assert {r["prompt"] for r in _log(a)} == asked  # every exchange, as one kernel reads the log
    assert sorted(_rows(own_log)) == sorted((p, "succeeded", 0) for p in asked)  # and SQLite, directly
    assert len(_creates(emu)) == 2 * count


# -- 6: offline, in a fresh kernel, from the log alone ------------------------------------------------


def test_a_fresh_kernel_replays_offline_without_a_token(kernels, emu, own_log):
    cell = "%%replicate --no-history\nWhat do hermit crabs eat?"
    earlier = kernels.start(REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url,
                            REPLICATE_MAGIC_DB=str(own_log))
    reply = _reply(earlier.ok(cell))  # logged with no --cache: every exchange is
    earlier.close()
    dead = emu.base_url
    emu.close()  # Replicate out of reach

    offline = kernels.start(REPLICATE_BASE_URL=dead, REPLICATE_MAGIC_DB=str(own_log))  # and no token
    assert offline.eval("'REPLICATE_API_TOKEN' in __import__('os').environ") is False
    offline.ok("%config ReplicateMagics.cache = 'only'")
    replayed = offline.ok(cell)
    assert _reply(replayed) == reply
    assert MARKER.search(_line(replayed))

    missing = offline.run("%%replicate --no-history\nNever asked before.")
    assert missing.status == "error" and missing.reply["ename"] == "NotInLogError"
    assert "Not in the log" in missing.reply["evalue"]
    assert [r[1:] for r in _rows(own_log)] == [("succeeded", 0), ("succeeded", 1)]
