"""``%%replicate`` in real IPython kernels, driven over the Jupyter protocol like a notebook.

Each test asserts what a notebook user would see: one output area that fills while the
reply streams (one ``display_data``, then ``update_display_data`` on the same display id at
a frame rate), the whole answer in the last update, a metrics line, no ``Out[]``; short
errors; a kernel that keeps answering while a reply streams, also after ``nest_asyncio``;
an interrupt that cancels the prediction on the (emulated) server. The emulator runs in
this process on 127.0.0.1; the kernel finds it through REPLICATE_BASE_URL. No test may
show the API token in any IOPub message.
"""

from __future__ import annotations

import itertools
import time

import pytest

from replicate_magic.emulator import Faults
from replicate_magic.render import markdown_html

from .conftest import TOKEN
from .kernel_fixtures import (
    _sessions,
    token_never_shown_and_html_is_inert,  # noqa: F401 - autouse: checks every message
)
from .kernel_harness import KernelSession, Request, html, kernel_env, plain

MODEL = "meta/meta-llama-3-70b-instruct"  # the default model
FRAME_RATE = 25  # display updates a second the package promises (README; display.FRAME_RATE)


def _start(tmp_path_factory: pytest.TempPathFactory, kernel_name: str) -> KernelSession:
    ipython_dir = tmp_path_factory.mktemp("ipython")
    session = KernelSession(kernel_env(ipython_dir, REPLICATE_API_TOKEN=TOKEN), cwd=str(ipython_dir),
                            kernel_name=kernel_name)
    _sessions.append(session)
    return session.start()


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory, kernel_name):
    """One kernel with the extension loaded, shared by the tests that can share it."""
    session = _start(tmp_path_factory, kernel_name)
    try:
        session.ok("%load_ext replicate_magic")
        yield session
    finally:
        session.close()


@pytest.fixture
def fresh_kernel(tmp_path_factory, kernel_name):
    session = _start(tmp_path_factory, kernel_name)
    try:
        yield session
    finally:
        session.close()


def _use(kernel: KernelSession, emu) -> KernelSession:
    """Point the kernel at this test's emulator (the base URL is no secret)."""
    kernel.run(f"import os; os.environ['REPLICATE_BASE_URL'] = {emu.base_url!r}", silent=True)
    return kernel


@pytest.fixture
def kernel(shared_kernel, emu):
    return _use(shared_kernel, emu)


# -- helpers ---------------------------------------------------------------------------------------


def _reply_area(cell: Request) -> tuple[str, list]:
    """The live reply's display id and its messages: the first display_data and its updates."""
    first = cell.of_type("display_data")[0]
    display_id = first.content["transient"]["display_id"]
    updates = [m for m in cell.of_type("update_display_data") if m.content["transient"]["display_id"] == display_id]
    return display_id, [first, *updates]


def _last_text(cell: Request) -> str:
    return plain(_reply_area(cell)[1][-1])


def _assert_frame_gaps(area: list) -> None:
    """Frames (the updates between the first display and the final one) keep the frame
    interval, by the kernel's clock: a burst of tokens never sends two frames back to back."""
    frames = area[1:-1]
    gaps = [(b.sent - a.sent).total_seconds() for a, b in itertools.pairwise(frames)]
    assert gaps and min(gaps) >= 0.5 / FRAME_RATE, sorted(gaps)[:5]


def _only_prediction(emu) -> str:
    (prediction_id,) = emu.predictions
    return prediction_id


def _output(emu, prediction_id: str) -> str:
    return "".join(emu.predictions[prediction_id].output)


def _history(kernel: KernelSession, name: str = "default") -> list[dict[str, str]]:
    return kernel.eval(f"__import__('replicate_magic').history({name!r})")


def _one_line_error(cell: Request, ename: str, lines: int = 2) -> str:
    """The cell failed with ``ename``, shown in at most ``lines`` lines (no frames); the text."""
    assert cell.status == "error", cell.reply
    assert cell.reply["ename"] == ename, cell.reply
    (error,) = cell.of_type("error")
    assert len(error.content["traceback"]) <= lines, error.content["traceback"]
    shown = "\n".join(error.content["traceback"])
    assert len(shown.splitlines()) <= lines, shown
    assert "Traceback" not in shown and "File " not in shown
    return shown


def _stream_and_poke(kernel: KernelSession, emu) -> tuple[Request, list[Request]]:
    """A ~1 s streaming cell; 0.3 s in, a queued cell, a completion and a kernel_info request.

    This is what JupyterLab does during Run All or while the user types; a magic that
    nests the kernel's loop (nest_asyncio on ipykernel 7) never answers them."""
    emu.inject(Faults(tokens_per_second=100))
    cell = kernel.send("%%replicate\nTell me something while I keep typing.")
    time.sleep(0.3)
    others = [kernel.send("1 + 1"), kernel.complete("import o"), kernel.kernel_info()]
    kernel.wait(cell, *others, timeout=20)
    return cell, others


# -- 1, 2: streaming into one display area ----------------------------------------------------------


def test_stream_updates_one_display_area_at_frame_rate(kernel, emu):
    emu.inject(Faults(tokens_per_second=100))  # ~100 tokens: about a second of streaming
    cell = kernel.ok("%%replicate\nWrite a few sentences about rivers.")

    display_id, area = _reply_area(cell)
    assert cell.display_ids() == {display_id}  # one live area, every update aimed at it
    assert [m.type for m in area[:1]] == ["display_data"]
    updates = area[1:]
    assert len(updates) > 3 + 1  # several intermediate frames, then the final one
    streaming = (updates[-1].sent - updates[0].sent).total_seconds()
    assert streaming > 0.5
    assert len(updates) <= FRAME_RATE * streaming + 3, (len(updates), streaming)
    _assert_frame_gaps(area)

    prediction_id = _only_prediction(emu)
    answer = _output(emu, prediction_id)
    assert len(emu.predictions[prediction_id].output) >= 80
    assert html(updates[-1]) == markdown_html(answer)
    assert plain(updates[-1]) == answer
    # Frames only grow (a prefix of the answer), after the status line that stood in first.
    texts = [plain(m) for m in updates[:-1] if plain(m) and not plain(m).startswith("[")]
    assert len(texts) > 3
    assert all(answer.startswith(t) for t in texts)

    assert not cell.of_type("execute_result")  # no Out[] repeating the answer
    metrics = cell.outputs[-1]  # the metrics line comes last, outside the live area
    assert metrics.type == "display_data" and "display_id" not in metrics.content.get("transient", {})
    assert MODEL in plain(metrics) and "tokens" in plain(metrics)


def test_full_speed_stream_is_coalesced_and_complete(kernel, emu):
    tokens = [f" word{i}" for i in range(5000)]
    emu.inject(Faults(tokens=tokens))  # as fast as the emulator can send
    cell = kernel.ok("%%replicate\nA long one, please.")

    _, area = _reply_area(cell)
    _assert_frame_gaps(area)
    shown = cell.of_type("display_data", "update_display_data")
    seconds = cell.seconds()
    # Frames at the frame rate, plus the few that any reply has: the empty area, the
    # model's status line, the final text and the metrics line. Never one per token.
    assert len(shown) <= 30 * seconds + 5, (len(shown), seconds)
    assert plain(area[-1]) == "".join(tokens) == _output(emu, _only_prediction(emu))
    assert html(area[-1]) == markdown_html("".join(tokens))
    assert not cell.of_type("execute_result")


# -- 3: interrupt -----------------------------------------------------------------------------------


def test_an_interrupt_whose_cancel_fails_says_the_prediction_may_still_run(kernel, emu):
    emu.inject(Faults(stall_after=3))
    cell = kernel.send("%%replicate --no-history\nA story that stalls.")
    wait_until = time.monotonic() + 10
    while not emu.predictions and time.monotonic() < wait_until:
        time.sleep(0.05)
    time.sleep(0.5)
    emu.inject(Faults(server_error=3))  # every try of the cancel fails
    kernel.interrupt()
    kernel.wait(cell, timeout=20)
    prediction_id = list(emu.predictions)[-1]
    shown = _one_line_error(cell, "ReplyInterrupted", lines=1)
    assert f"could not cancel {prediction_id}: it may still be running, see https://replicate.com/p/{prediction_id}" in shown
    assert "could not cancel" in _last_text(cell) and "was cancelled" not in shown


def test_interrupt_cancels_the_prediction_and_keeps_the_partial_answer(kernel, emu):
    kernel.ok("%replicate reset")
    kernel.ok("%%replicate\nFirst question.")
    before = _history(kernel)
    assert len(before) == 2

    emu.inject(Faults(tokens_per_second=20))  # ~5 s of streaming
    cell = kernel.send("%%replicate\nA slow answer, please.")
    time.sleep(1.0)
    kernel.interrupt()
    cancelled = emu.wait_for_cancel(timeout=5)
    kernel.wait(cell, timeout=10)

    prediction_id = list(emu.predictions)[-1]
    assert cancelled == prediction_id
    assert emu.predictions[prediction_id].status == "canceled"
    shown = _one_line_error(cell, "ReplyInterrupted", lines=1)
    assert "Interrupted" in shown and "KeyboardInterrupt" not in shown

    answer = _output(emu, prediction_id)  # what the server had generated when it was cancelled
    last = _last_text(cell)
    partial, _, note = last.partition("\n\n[interrupted")
    assert note, last
    assert partial and answer.startswith(partial)
    assert 5 < len(emu.predictions[prediction_id].output) < 80  # some tokens, far from all
    assert "turn 2" in partial  # it was the second turn of the conversation
    assert not cell.of_type("execute_result")

    assert _history(kernel) == before  # the interrupted turn is not recorded
    after = kernel.ok("%%replicate\nAre you still there?")
    assert "turn 2" in _last_text(after)  # the next cell continues the unchanged conversation
    assert len(_history(kernel)) == 4


# -- 4, 5: the kernel keeps answering while a reply streams ----------------------------------------


def test_requests_during_a_stream_are_answered(kernel, emu):
    cell, (queued, completion, info) = _stream_and_poke(kernel, emu)

    assert cell.status == "ok" and not cell.stderr
    assert _last_text(cell) == _output(emu, _only_prediction(emu))
    assert queued.status == "ok"
    assert [plain(m) for m in queued.of_type("execute_result")] == ["2"]
    assert completion.status == "ok" and "os" in completion.reply["matches"]
    assert info.status == "ok" and info.reply["language_info"]["name"] == "python"


def test_stream_works_after_the_user_applied_nest_asyncio(fresh_kernel, emu):
    kernel = _use(fresh_kernel, emu)
    kernel.ok("import nest_asyncio; nest_asyncio.apply()")
    kernel.ok("%load_ext replicate_magic")

    cell, (queued, completion, info) = _stream_and_poke(kernel, emu)

    assert cell.status == "ok" and not cell.stderr
    assert _last_text(cell) == _output(emu, _only_prediction(emu))
    assert [plain(m) for m in queued.of_type("execute_result")] == ["2"]
    assert completion.status == "ok" and info.status == "ok"


# -- 6: top-level await on the kernel's own loop ------------------------------------------------------


def test_top_level_await_then_magic(kernel, emu):
    kernel.ok("from replicate_magic import Replicate")
    kernel.ok(
        "text = ''.join([t async for t in Replicate.create_async_generator("
        f"{MODEL!r}, [{{'role': 'user', 'content': 'hi'}}])])"
    )
    (prediction_id,) = emu.predictions
    assert kernel.eval("text") == _output(emu, prediction_id)
    assert "You said: “hi”" in kernel.eval("text")

    cell = kernel.ok("%%replicate --no-history\nAnd now from the magic.")
    newest = list(emu.predictions)[-1]
    assert newest != prediction_id
    assert _last_text(cell) == _output(emu, newest)


# -- 7: errors ----------------------------------------------------------------------------------------

_WRONG_TOKEN = "import os; os.environ['REPLICATE_API_TOKEN'] = 'wrong-' + os.environ['REPLICATE_API_TOKEN']"
_RIGHT_TOKEN = "os.environ['REPLICATE_API_TOKEN'] = os.environ['REPLICATE_API_TOKEN'].removeprefix('wrong-')"


def test_wrong_token_fails_in_one_line_and_stops_run_all(kernel, emu):
    # The wrong token contains the right one, so the token check also catches it being echoed.
    kernel.ok(_WRONG_TOKEN)
    try:
        cell = kernel.send("%%replicate\nHello?", stop_on_error=True)
        queued = kernel.send("ran_after_failure = True")  # Run All's next cell
        kernel.wait(cell, queued)
    finally:
        kernel.ok(_RIGHT_TOKEN)

    shown = _one_line_error(cell, "MissingAuthError")
    assert "401" in shown and "REPLICATE_API_TOKEN" in shown
    assert "no reply" in _last_text(cell)
    assert not emu.predictions  # nothing was created, nothing bills
    assert queued.status == "aborted"  # a failing cell stops the cells queued after it
    assert kernel.eval("'ran_after_failure' in dir()") is False


def test_error_event_keeps_the_partial_answer_and_the_history(kernel, emu):
    kernel.ok("%replicate reset")
    kernel.ok("%%replicate\nFirst question.")
    before = _history(kernel)

    emu.inject(Faults(error_after=3))
    cell = kernel.run("%%replicate\nThis one will fail.")

    shown = _one_line_error(cell, "ModelError")
    assert "CUDA out of memory (emulated)" in shown
    failed = list(emu.predictions)[-1]
    partial = _output(emu, failed)
    assert len(emu.predictions[failed].output) == 3
    last = _last_text(cell)
    assert last.startswith(partial + "\n\n[") and "error" in last
    assert _history(kernel) == before


def test_run_all_with_nbclient_stops_at_the_failing_cell(tmp_path, emu, kernel_name):
    import nbclient  # test dependencies: a missing one is a failure, not a skip
    import nbformat
    cells = [
        f"%load_ext replicate_magic\nimport os\nos.environ['REPLICATE_BASE_URL'] = {emu.base_url!r}",
        "%%replicate\nHello from Run All.",
        _WRONG_TOKEN,
        "%%replicate\nThis cell fails.",
        "ran_after_failure = True",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = kernel_env(tmp_path, REPLICATE_API_TOKEN=TOKEN)
    client = nbclient.NotebookClient(nb, timeout=30, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failure:
        client.execute(env=env)

    assert failure.value.ename == "MissingAuthError"
    saved = nb.cells[1].outputs  # what the .ipynb keeps: the final answer, then the metrics
    (prediction_id,) = emu.predictions
    assert [o.output_type for o in saved] == ["display_data", "display_data"]
    assert saved[0].data["text/plain"] == _output(emu, prediction_id)
    assert saved[0].data["text/html"] == markdown_html(_output(emu, prediction_id))
    assert "tokens" in saved[1].data["text/plain"]
    failed = nb.cells[3].outputs
    assert failed[-1].output_type == "error" and len(failed[-1].traceback) <= 2
    assert nb.cells[4].execution_count is None and not nb.cells[4].outputs
    assert TOKEN not in nbformat.writes(nb)


# -- 8, 9: conversation and prompt ---------------------------------------------------------------------


def test_history_across_cells_and_rerun_replaces(kernel, emu):
    kernel.ok("%replicate reset")
    first = kernel.ok("%%replicate\nFirst question.", cell_id="cell-a")
    second = kernel.ok("%%replicate\nSecond question.", cell_id="cell-b")
    assert "turn 1" in _last_text(first)
    assert "turn 2" in _last_text(second)
    history = _history(kernel)
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [history[0]["content"], history[2]["content"]] == ["First question.", "Second question."]
    assert history[3]["content"] == _last_text(second)

    again = kernel.ok("%%replicate\nFirst question, reworded.", cell_id="cell-a")
    assert "turn 1" in _last_text(again)  # sent without its own earlier exchange
    rerun = _history(kernel)
    assert len(rerun) == 4  # replaced, not appended
    assert rerun[0]["content"] == "First question, reworded."
    assert rerun[1]["content"] == _last_text(again)
    assert rerun[2:] == history[2:]


def test_turns_asked_in_a_loop_in_one_cell_all_stay_and_a_rerun_replaces_them(kernel, emu):
    kernel.ok("%replicate reset")
    loop = "for q in ['One?', 'Two?', 'Three?']:\n    get_ipython().run_cell_magic('replicate', '', q)"
    kernel.ok(loop, cell_id="loop")
    assert [m["content"] for m in _history(kernel) if m["role"] == "user"] == ["One?", "Two?", "Three?"]
    kernel.ok(loop.replace("Two?", "Deux?"), cell_id="loop")
    assert [m["content"] for m in _history(kernel) if m["role"] == "user"] == ["One?", "Deux?", "Three?"]


def test_in_expands_to_what_was_typed_not_the_transformed_source(kernel, emu):
    kernel.ok("%time y = 2")
    kernel.ok("%%replicate --no-history\nWhat does {In[-2]} do?")
    (create,) = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]
    assert create.json["input"]["prompt"] == "What does %time y = 2 do?"


def test_prompt_expands_names_and_keeps_json_braces(kernel, emu):
    kernel.ok("topic = 'tides'")
    kernel.ok('%%replicate --no-history\nTell me about {topic}. Answer as JSON like {"topic": "x", "n": 1}.')

    (create,) = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]
    assert create.json["input"]["prompt"] == 'Tell me about tides. Answer as JSON like {"topic": "x", "n": 1}.'


def test_pasted_code_is_sent_as_typed_and_the_token_is_never_expanded(kernel, emu):
    kernel.ok("i, secret = 3, __import__('os').environ['REPLICATE_API_TOKEN']")  # the token, never typed
    cell = kernel.ok('%%replicate --no-history\nFix {i} bugs in:\n```python\nprint(f"row {i}")\n```\n'
                     "Use `{i}` and {secret} and {{i}}.")
    (create,) = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]
    assert create.json["input"]["prompt"] == (
        'Fix 3 bugs in:\n```python\nprint(f"row {i}")\n```\nUse `{i}` and {secret} and {i}.')
    line = plain(cell.outputs[-1])
    assert "expanded: {i}" in line and "not expanded, since the value holds the API token: {secret}" in line

    kernel.ok("%%replicate --no-history --no-expand\nExactly {i}.")
    assert [r for r in emu.requests if r.method == "POST"][-1].json["input"]["prompt"] == "Exactly {i}."


HOSTILE = ['<img src=x onerror="window.pwned=1"> ', "\\`<img src=x ", 'onerror="window.pwned=2">\\` ',
           "[x](&#106;avascript:window.pwned=3) ", "![](https://elsewhere.example/p.png?d=secret)\n\n",
           "```a`b\n<svg onload=window.pwned=4>\n```\n", "\x1b]52;c;ZXZpbA==\x07\x1b[2J done"]


def test_hostile_replies_logs_and_history_stay_text(kernel, emu):
    emu.inject(Faults(tokens=HOSTILE, logs=["\x1b]0;title\x07", '<img src=x onerror="window.pwned=5"> loading'],
                      cold_start=0.6))
    cell = kernel.ok("%%replicate -c hostile\nRepeat it.")
    _, area = _reply_area(cell)
    statuses = [html(m) for m in area if plain(m).startswith("[")]
    assert any("&lt;img src=x onerror=&quot;window.pwned=5&quot;&gt; loading" in s for s in statuses), statuses
    assert not any("\x1b" in s for s in statuses)
    final = html(area[-1])
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in final
    assert "<img" not in final and "<svg" not in final and "javascript:" not in final.replace("avascript", "")
    assert plain(area[-1]) == "".join(HOSTILE)  # the text itself is kept, as the model wrote it

    history = kernel.run("%replicate history hostile")
    (shown,) = history.of_type("execute_result")
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in html(shown)
    assert "\x1b" not in plain(shown)  # the text/plain a terminal would print

    failed = kernel.run("%%replicate -m owner/<img/src=x/onerror=window.pwned=6>\nHi")
    assert failed.status == "error"
    status = [html(m) for m in failed.of_type("display_data", "update_display_data")]
    assert any("asking owner/&lt;img/src=x/onerror=window.pwned=6&gt;" in s for s in status), status
    # The autouse check then parses every text/html of these cells against the allow-list.


# -- 10: loading the extension is cheap ------------------------------------------------------------------


_WATCH_IMPORTS = """
import sys, threading
class _Watch:
    seen = {}
    def find_spec(self, name, path=None, target=None):
        if name in ("aiohttp", "ipywidgets", "markdown_it"):
            self.seen.setdefault(name, threading.current_thread().name)
        return None
_watch = _Watch()
sys.meta_path.insert(0, _watch)
"""


def test_load_ext_leaves_the_heavy_imports_to_a_background_thread(fresh_kernel, emu):
    kernel = _use(fresh_kernel, emu)
    heavy = "sorted({m.split('.')[0] for m in __import__('sys').modules} & {'aiohttp', 'ipywidgets', 'markdown_it'})"
    assert kernel.eval(heavy) == []
    kernel.ok(_WATCH_IMPORTS)
    kernel.ok("%load_ext replicate_magic")
    kernel.ok("import threading\nfor t in threading.enumerate():\n    t.name == 'replicate-magic-warm-up' and t.join(30)")
    # The kernel's own thread imported none of them; the warm-up thread imported what a turn needs.
    assert kernel.eval("_watch.seen") == {"aiohttp": "replicate-magic-warm-up", "markdown_it": "replicate-magic-warm-up"}
    assert kernel.eval(heavy) == ["aiohttp", "markdown_it"]
    kernel.ok("%%replicate\nHi.")
    assert "ipywidgets" not in kernel.eval("_watch.seen")  # the panel's, loaded on first use only


def test_a_cell_right_after_load_ext_waits_for_the_warm_up_and_answers(fresh_kernel, emu):
    kernel = _use(fresh_kernel, emu)
    kernel.ok("%load_ext replicate_magic")  # no pause: the turn's imports race the thread's
    reply = kernel.ok("%%replicate --no-history\nHi.")
    assert _last_text(reply) == _output(emu, _only_prediction(emu))
