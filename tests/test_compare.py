"""Models side by side: ``%%replicate -m A -m B``, and the panel's "Compare with".

In-process shells (the terminal path) and panels against the emulator over real sockets, then
real kernels (one display area of columns, its frame rate, an interrupt). The browser side is
test_browser_compare.py.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic.compare_view import CompareView
from replicate_magic.emulator import Emulator
from replicate_magic.errors import ResponseError
from replicate_magic.options import parse_cell_options
from replicate_magic.panel import ChatPanel
from replicate_magic.render import Column, columns_html, markdown_html

from .conftest import TOKEN
from .html_allowlist import violations
from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import Request, html, plain
from .panel_harness import buttons, type_and_send, visible, wait, wait_until

LLAMA = "meta/meta-llama-3-70b-instruct"
GPT = "openai/gpt-4o-mini"
MIXTRAL = "mistralai/mixtral-8x7b-instruct-v0.1"
FRAME_RATE = 25  # display updates a second the package promises, for all the columns together


def ask(ip, line: str, cell: str = "Compare these."):
    return ip.run_cell_magic("replicate", line, cell)


def output_of(emu: Emulator, model: str) -> str:
    """The reply of the model's latest prediction."""
    return "".join([p for p in emu.predictions.values() if p.model == model][-1].output)


def creates(emu: Emulator) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def input_for(emu: Emulator, model: str) -> dict:
    """The input of the model's latest create."""
    return [r for r in creates(emu) if r.path == f"/v1/models/{model}/predictions"][-1].json["input"]


@pytest.fixture
def paced(ip, monkeypatch) -> Iterator[Emulator]:
    """An emulator streaming 60 tokens a second, so replies take long enough to overlap or not."""
    with Emulator(token=TOKEN, tokens_per_second=60) as emulator:
        monkeypatch.setenv("REPLICATE_BASE_URL", emulator.base_url)
        yield emulator


# -- options and the CLI -----------------------------------------------------------------------


def test_model_is_repeatable_and_model_stays_the_first():
    options = parse_cell_options(f"-m {LLAMA} --model {GPT}")
    assert options.models == (LLAMA, GPT) and options.model == LLAMA
    assert parse_cell_options("").models == () and parse_cell_options("").model is None


@pytest.mark.parametrize("line, said", [
    (f"-m {LLAMA} -m {LLAMA}", f"{LLAMA} is given twice"),
    (f"-m llama-3-70b -m {LLAMA}", f"{LLAMA} is given twice (as llama-3-70b and {LLAMA})"),
    (" ".join(f"-m a/m{n}" for n in range(7)), "at most 6"),
])
def test_the_same_model_twice_or_too_many_is_a_usage_error_and_nothing_is_sent(ip, env_emu, line, said):
    with pytest.raises(UsageError) as info:
        ask(ip, line)
    assert str(info.value).startswith("argument -m/--model: ") and said in str(info.value)
    assert "\n" not in str(info.value)
    assert list(env_emu.requests) == []


def test_new_is_refused_side_by_side_since_nothing_is_recorded(ip, env_emu):
    with pytest.raises(UsageError, match="use --no-history"):
        ask(ip, f"-m {LLAMA} -m {GPT} --new")
    assert list(env_emu.requests) == []


def test_the_cli_refuses_several_models_in_one_line():
    done = subprocess.run([sys.executable, "-m", "replicate_magic", "--emulator", "-m", LLAMA, "-m", GPT, "Hi"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage error: one -m per run") and len(done.stderr.splitlines()) == 1


# -- the renderer ------------------------------------------------------------------------------


def test_columns_escape_labels_and_notes_and_pass_the_allow_list():
    hostile = '<img src=x onerror="alert(1)">'
    shown = columns_html([Column(hostile, markdown_html("**one**"), note=hostile),
                          Column("b/c", "", note=f"ResponseError: {hostile}", failed=True)], note=hostile)
    assert "<img" not in shown and shown.count("&lt;img src=x") == 4
    assert "<strong>one</strong>" in shown and shown.count('class="rm-column"') == 2
    assert 'class="rm-error mathjax_ignore"' in shown and 'class="rm-metrics mathjax_ignore"' in shown
    assert violations(shown) == []


# -- the magic in a terminal shell ---------------------------------------------------------------


def test_every_model_streams_at_once_and_each_reply_shows_whole_under_its_name(ip, paced, capsys):
    models = (LLAMA, GPT, MIXTRAL)
    ask(ip, " ".join(f"-m {m}" for m in models) + " --max-tokens 40 -o replies")
    predictions = list(paced.predictions.values())
    assert sorted(p.model for p in predictions) == sorted(models)
    # All at once: each prediction was created before any of them completed.
    assert max(p.created_ns for p in predictions) < min(p.completed_ns for p in predictions)
    printed = capsys.readouterr().out
    for model in models:  # one block each, never interleaved: header, whole reply, its metrics
        assert f"── {model} ──\n{output_of(paced, model)}\n[{model} · 40 tokens" in printed
    assert ip.user_ns["replies"] == {m: output_of(paced, m) for m in models}
    assert printed.rstrip().endswith("side by side: each model got the prompt alone (conversation default is "
                                     "empty); no reply was recorded in it")
    assert replicate_magic.history() == []


def test_every_option_reaches_every_model_in_its_own_keys(ip, env_emu):
    ask(ip, f'-m {LLAMA} -m {MIXTRAL} -t 0.3 --top-p 0.5 --max-tokens 7 -i seed=3 -s "be brief" --no-history')
    for model, key in ((LLAMA, "max_tokens"), (MIXTRAL, "max_new_tokens")):
        sent = input_for(env_emu, model)
        assert (sent["temperature"], sent["top_p"], sent[key], sent["seed"]) == (0.3, 0.5, 7, 3)
        assert "be brief" in sent.get("system_prompt", "") + sent["prompt"]


def test_an_unknown_model_fails_only_its_column(ip, env_emu, capsys):
    assert ask(ip, f"-m {LLAMA} -m nobody/nothing -o replies") is None  # the cell itself succeeds
    printed = capsys.readouterr().out
    assert ip.user_ns["replies"] == {LLAMA: output_of(env_emu, LLAMA), "nobody/nothing": None}
    block = printed.split("── nobody/nothing ──\n", 1)[1].split("\n\n", 1)[0]
    assert block.startswith("[ResponseError: Replicate has no model nobody/nothing") and "\n" not in block
    assert f"── {LLAMA} ──\n{output_of(env_emu, LLAMA)}\n[{LLAMA} ·" in printed


def test_when_every_model_fails_the_cell_fails_in_one_line(ip, env_emu):
    with pytest.raises(ResponseError) as info:
        ask(ip, "-m nobody/one -m nobody/two")
    message = str(info.value)
    assert message.startswith("Every model failed (each column says why); nobody/one: ResponseError: Replicate has "
                              "no model nobody/one") and "\n" not in message


def test_the_history_is_sent_to_each_model_and_nothing_is_recorded(ip, env_emu, capsys):
    ask(ip, "", "First question")
    before = replicate_magic.history()
    ask(ip, f"-m {LLAMA} -m {GPT} -s 'answer in French'", "Second question")
    for model in (LLAMA, GPT):
        assert "turn 2" in output_of(env_emu, model)  # both saw the first turn
    assert "User: First question" in input_for(env_emu, LLAMA)["prompt"]
    assert [m["content"] for m in input_for(env_emu, GPT)["messages"]][:3] == [
        "answer in French", "First question", before[1]["content"]]
    assert "each model got the same 1 earlier turn of conversation default; no reply was recorded in it (nor the "\
           "-s prompt)" in capsys.readouterr().out
    assert replicate_magic.history() == before
    # The log keeps both exchanges, but under no conversation: no restore brings them back.
    rows = replicate_magic.log(n=3)
    assert [(row["model"].split(" ")[0], row["chat"]) for row in rows[:2]] in (
        [(LLAMA, ""), (GPT, "")], [(GPT, ""), (LLAMA, "")])
    ask(ip, "", "Third question")  # continues from the first: the compared turn is not in the history
    assert "turn 2" in "".join(list(env_emu.predictions.values())[-1].output)


def test_no_history_sends_the_prompt_alone_to_each(ip, env_emu, capsys):
    ask(ip, "", "First question")
    ask(ip, f"-m {LLAMA} -m {GPT} --no-history", "Alone")
    assert all("turn 1" in output_of(env_emu, m) for m in (LLAMA, GPT))
    assert "each model got the prompt alone (--no-history); nothing was recorded" in capsys.readouterr().out


def test_cache_replays_each_model_from_the_log(ip, env_emu, capsys):
    line = f"-m {LLAMA} -m {GPT} --cache --no-history --max-tokens 12 -o replies"
    ask(ip, line)
    first = dict(ip.user_ns["replies"])
    assert len(env_emu.predictions) == 2
    capsys.readouterr()
    ask(ip, line)
    assert len(env_emu.predictions) == 2  # nothing asked the second time
    assert ip.user_ns["replies"] == first
    assert capsys.readouterr().out.count("replayed from the log") == 2


# -- the view: one throttle for the row ---------------------------------------------------------


class _Handle:
    def __init__(self) -> None:
        self.bundles: list[dict[str, str]] = []

    def update(self, data: dict[str, str], raw: bool = False) -> None:
        self.bundles.append(data)


def test_one_throttle_serves_every_column():
    """Three columns fed 900 tokens in 0.4 s get at most a frame's worth of updates in all."""
    view = CompareView(["a/x", "b/y", "c/z"], rich=True)
    view._handle = handle = _Handle()

    async def feed() -> float:
        started = time.monotonic()
        for n in range(300):
            for index in range(3):
                view.token(index, f" w{n}")
            await asyncio.sleep(0.4 / 300)
        return time.monotonic() - started

    elapsed = asyncio.run(feed())
    view.finish()
    assert 3 <= len(handle.bundles) <= elapsed * FRAME_RATE + 2
    final = handle.bundles[-1]["text/html"]
    assert final.count(markdown_html("".join(f" w{n}" for n in range(300)))) == 3
    assert violations(final) == []


# -- the panel ---------------------------------------------------------------------------------


@pytest.fixture
def make_panel(env_emu) -> Iterator[Callable[..., ChatPanel]]:
    from replicate_magic.conversation import kernel_store

    kernel_store.clear()
    panels: list[ChatPanel] = []

    def make(**settings) -> ChatPanel:
        panel = ChatPanel(**settings)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()
        wait(panel, 15)
    kernel_store.clear()


def _stop(panel: ChatPanel) -> None:
    buttons(panel)["Stop"].click()


def test_the_panel_streams_its_models_into_columns_and_records_nothing(make_panel, env_emu, monkeypatch):
    with Emulator(token=TOKEN, tokens_per_second=60) as emu:
        monkeypatch.setenv("REPLICATE_BASE_URL", emu.base_url)
        panel = make_panel(model_name=LLAMA)
        panel._compare.value = f" {GPT} ,"
        type_and_send(panel, "Compare rivers")

        def both_streaming() -> bool:
            columns = panel.model.comparison.columns
            return all(c.reply and not c.done for c in columns)

        wait_until(both_streaming, 10)  # seen together mid-stream, not one after the other
        assert panel._live.value.count('class="rm-column"') == 2
        wait(panel, 15)
        columns = panel.model.comparison.columns
        assert [c.model for c in columns] == [LLAMA, GPT]
        for column in columns:
            assert column.reply == output_of(emu, column.model) and column.done and not column.failed
            assert column.note.startswith(f"{column.model} · ") and "tokens" in column.note
        shown = panel._live.value
        assert all(markdown_html(c.reply) in shown for c in columns) and violations(shown) == []
        assert "each model got the prompt alone (conversation default is empty)" in shown
        assert panel.model.status.startswith("2 of 2 models replied") and not panel.model.error
        assert replicate_magic.history() == [] and panel.model.draft is None


def test_the_panels_stop_cancels_every_model(make_panel, env_emu, monkeypatch):
    with Emulator(token=TOKEN, tokens_per_second=10) as emu:
        monkeypatch.setenv("REPLICATE_BASE_URL", emu.base_url)
        panel = make_panel(model_name=LLAMA, compare_with=GPT)
        type_and_send(panel, "Long stories")
        wait_until(lambda: all(c.reply for c in panel.model.comparison.columns), 10)
        _stop(panel)
        assert {emu.wait_for_cancel(5), emu.wait_for_cancel(5)} == set(emu.predictions)
        wait(panel, 15)
        assert panel.model.status == f"Stopped: {LLAMA}: cancelled; {GPT}: cancelled; no reply was recorded."
        assert all(p.status == "canceled" for p in emu.predictions.values())
        assert [c.note for c in panel.model.comparison.columns] == ["stopped: cancelled"] * 2
        assert not panel.model.busy and replicate_magic.history() == []


def test_the_panel_refuses_a_model_named_twice_and_fails_one_column_alone(make_panel, env_emu):
    panel = make_panel(model_name=LLAMA, compare_with="llama-3-70b")
    assert panel.model.send("Hi") is None and panel.model.error
    assert panel.model.status.startswith(f"Compare with: {LLAMA} is given twice") and not panel.model.busy
    assert list(env_emu.requests) == []
    panel.model.compare_with = "nobody/nothing"
    type_and_send(panel, "Hi")
    wait(panel, 15)
    ok, failed = panel.model.comparison.columns
    assert ok.reply == output_of(env_emu, LLAMA) and not ok.failed
    assert failed.failed and failed.note.startswith("ResponseError: Replicate has no model nobody/nothing")
    assert panel.model.status.startswith("1 of 2 models replied")


def test_a_model_that_makes_files_shows_its_images_in_its_panel_column(make_panel, env_emu):
    import base64
    from urllib.parse import urlsplit

    panel = make_panel(model_name=LLAMA, compare_with="black-forest-labs/flux-schnell")
    type_and_send(panel, "A red fox in the snow")
    wait(panel, 15)
    shown = panel._live.value
    (made,) = [p for p in env_emu.predictions.values() if p.model == "black-forest-labs/flux-schnell"]
    (url,) = made.output
    served = env_emu.files.get(urlsplit(url).path).data
    assert f'<img src="data:image/webp;base64,{base64.b64encode(served).decode()}"' in shown
    assert url not in visible(shown)  # the image, not its address as text
    assert markdown_html(output_of(env_emu, LLAMA)) in shown
    assert violations(shown) == []
    assert panel.model.status.startswith("2 of 2 models replied") and not panel.model.error
    assert replicate_magic.history() == []


# -- real kernels --------------------------------------------------------------------------------

# The kernel: conftest's (one per module and kernelspec, pointed at each test's own log).


@pytest.fixture
def served(kernel) -> Iterator[Callable[[float], Emulator]]:
    """An emulator at a given pace, which the kernel is pointed at."""
    started: list[Emulator] = []

    def serve(tokens_per_second: float) -> Emulator:
        emulator = Emulator(token=TOKEN, tokens_per_second=tokens_per_second).start()
        started.append(emulator)
        kernel.run(f"import os; os.environ['REPLICATE_BASE_URL'] = {emulator.base_url!r}", silent=True)
        kernel.ok("%replicate reset")
        return emulator

    yield serve
    for emulator in started:
        emulator.close()


def _area(cell: Request) -> list:
    """The columns' area: its first display and every update, all on one display id."""
    (first,) = cell.of_type("display_data")[:1]
    display_id = first.content["transient"]["display_id"]
    assert cell.display_ids() == {display_id}  # one area for every model
    return [first, *cell.of_type("update_display_data")]


def test_one_area_streams_every_column_with_its_own_metrics(kernel, served):
    emu = served(60)
    cell = kernel.ok(f"%%replicate -m {LLAMA} -m {GPT} --max-tokens 40 -o replies\nCompare rivers.")
    area = _area(cell)
    replies = {m: output_of(emu, m) for m in (LLAMA, GPT)}
    # Some frame shows both replies under way at once: they stream together.
    together = [plain(m) for m in area[1:-1] if all(r[:20] in plain(m) and r not in plain(m) for r in replies.values())]
    assert together, [plain(m)[:200] for m in area]
    final = area[-1]
    for model, reply in replies.items():
        assert markdown_html(reply) in html(final)
        assert f"── {model} ──\n{reply}\n[{model} · 40 tokens" in plain(final)
    assert html(final).count('class="rm-metrics mathjax_ignore"') == 2
    assert not cell.of_type("execute_result")
    assert kernel.eval("replies") == replies
    assert kernel.eval("__import__('replicate_magic').history()") == []


def test_three_models_streaming_fast_stay_within_the_frame_rate(kernel, served):
    emu = served(150)  # each model ~100 tokens in ~0.7 s: 450 tokens a second in all
    cell = kernel.ok(f"%%replicate -m {LLAMA} -m {GPT} -m {MIXTRAL} --no-history\nA few sentences, please.")
    area = _area(cell)
    seconds = cell.seconds()
    assert len(emu.predictions) == 3 and sum(len(p.output) for p in emu.predictions.values()) > 240
    # One throttle for the whole row: about FRAME_RATE messages a second in all, never one per
    # model per frame (that would be 75), plus the first display and the final update.
    assert len(area) <= 30 * seconds + 3, (len(area), seconds)
    frames = area[1:-1]
    gaps = [(b.sent - a.sent).total_seconds() for a, b in itertools.pairwise(frames)]
    assert len(frames) > 5 and min(gaps) >= 0.5 / FRAME_RATE, sorted(gaps)[:5]
    assert all(markdown_html("".join(p.output)) in html(area[-1]) for p in emu.predictions.values())


def test_an_interrupt_cancels_every_model_and_says_what_became_of_each(kernel, served):
    emu = served(10)  # ~10 s a reply
    cell = kernel.send(f"%%replicate -m {LLAMA} -m {GPT}\nTwo slow answers.")
    deadline = time.monotonic() + 15
    while not (len(emu.predictions) == 2 and all(len(p.output) >= 3 for p in emu.predictions.values())):
        assert time.monotonic() < deadline, "the predictions did not start"
        time.sleep(0.05)
    kernel.interrupt()
    assert {emu.wait_for_cancel(5), emu.wait_for_cancel(5)} == set(emu.predictions)
    kernel.wait(cell, timeout=15)
    assert all(p.status == "canceled" for p in emu.predictions.values())
    assert cell.status == "error" and cell.reply["ename"] == "ReplyInterrupted"
    (error,) = cell.of_type("error")
    assert error.content["traceback"] == [
        f"ReplyInterrupted: Interrupted: {LLAMA}: cancelled; {GPT}: cancelled; the partial answers stay above, "
        "the conversation is unchanged."]
    final = plain(_area(cell)[-1])
    for prediction in emu.predictions.values():
        partial = final.split(f"── {prediction.model} ──\n", 1)[1].split("\n[interrupted: cancelled]", 1)[0]
        assert partial and "".join(prediction.output).startswith(partial)
    assert kernel.eval("__import__('replicate_magic').history()") == []
