"""The chat panel in plain pytest: widgets driven by their values and ``Button.click()``,
turns streamed from the emulator over real sockets. The browser side is test_browser.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from ipywidgets import Combobox
from traitlets import TraitError

import replicate_magic
from replicate_magic.catalog import DEFAULT_MODEL, KNOWN_MODELS
from replicate_magic.conversation import kernel_store
from replicate_magic.emulator import Faults
from replicate_magic.loop import shared_loop
from replicate_magic.panel import _CSS, ChatPanel
from replicate_magic.sessions import close_session

from .conftest import TOKEN
from .html_allowlist import violations
from .panel_harness import buttons, type_and_send, visible, wait, wait_until, walk

PANEL_CSS = _CSS.removeprefix("<style>").removesuffix("</style>")  # the panel's own style sheet

WORDS = [f" word{n}" for n in range(40)]


@pytest.fixture
def make_panel(env_emu) -> Iterator[Callable[..., ChatPanel]]:
    kernel_store.clear()
    panels: list[ChatPanel] = []

    def make(chat: str = "default", **settings) -> ChatPanel:
        panel = ChatPanel(chat=chat, **settings)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()
        wait(panel)
    kernel_store.clear()


@pytest.fixture
def ip(env_emu):
    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    shell.extension_manager.load_extension("replicate_magic")
    yield shell
    shell.extension_manager.unload_extension("replicate_magic")


# -- what a user sees ------------------------------------------------------------------------------


def conversation_text(panel: ChatPanel) -> str:
    """The conversation as a reader sees it (the text of its HTML, history then live),
    with runs of white space as one space, as a browser shows them."""
    return squash(visible(panel._history.value) + " " + visible(panel._live.value))


def squash(text: str) -> str:
    return " ".join(text.split())


def last_input(emu) -> dict:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")][-1].json["input"]


def reply_of(emu, index: int = -1) -> str:
    return "".join(list(emu.predictions.values())[index].output)


# -- the panel ---------------------------------------------------------------------------------------


def test_panel_shows_its_controls_and_an_empty_conversation(make_panel):
    panel = make_panel("ideas")
    assert list(buttons(panel)) == ["Send", "Stop", "Clear"]
    assert buttons(panel)["Stop"].disabled and not buttons(panel)["Send"].disabled
    (picker,) = [w for w in walk(panel) if isinstance(w, Combobox)]
    assert picker.options == KNOWN_MODELS and picker.ensure_option is False and picker.value == DEFAULT_MODEL
    assert (panel._temperature.value, panel._max_tokens.value) == (0.7, 1024)
    assert "<code>ideas</code>" in panel._title.value
    assert "Conversation ideas is empty" in conversation_text(panel)


def test_send_returns_at_once_and_streams_the_reply(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=WORDS, tokens_per_second=200))
    started = time.monotonic()
    type_and_send(panel, "Hello there")
    assert time.monotonic() - started < 0.5  # the click handler never waits for the model
    assert panel._prompt.value == "" and buttons(panel)["Send"].disabled and not buttons(panel)["Stop"].disabled
    wait_until(lambda: "word3" in conversation_text(panel))
    assert "word39" not in conversation_text(panel)  # seen mid-stream, not only at the end
    wait(panel)
    shown = conversation_text(panel)
    assert "You Hello there" in shown and squash("".join(WORDS)) in shown
    assert "tokens" in panel.model.status and not panel.model.error
    assert not buttons(panel)["Send"].disabled and buttons(panel)["Stop"].disabled
    assert replicate_magic.history() == [
        {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "".join(WORDS)},
    ]
    assert panel._live.value == ""  # the turn moved into the history


def test_reply_updates_are_coalesced_to_a_frame_rate(make_panel, env_emu):
    panel = make_panel()
    frames: list[str] = []
    panel._live.observe(lambda change: frames.append(change.new), names="value")
    env_emu.inject(Faults(tokens=["tok "] * 600, tokens_per_second=2000))  # ~0.3 s, far faster than the frame rate
    started = time.monotonic()
    type_and_send(panel, "Go")
    wait(panel)
    elapsed = time.monotonic() - started
    assert len(frames) <= elapsed * 25 + 4  # start, frames at 25 a second, final; never one per token
    assert squash("tok " * 600) in conversation_text(panel)


def test_stop_cancels_the_prediction_and_the_panel_is_ready_again(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=WORDS, stall_after=3))
    type_and_send(panel, "Tell me a long story")
    wait_until(lambda: "word2" in conversation_text(panel))
    buttons(panel)["Stop"].click()
    (prediction_id,) = list(env_emu.predictions)
    assert env_emu.wait_for_cancel(5) == prediction_id
    wait(panel)
    assert panel.model.status == "Stopped: cancelled; this turn is not in the history." and not panel.model.busy
    shown = conversation_text(panel)
    assert "word0 word1 word2 stopped: this turn is not in the history" in shown
    assert replicate_magic.history() == []
    assert not buttons(panel)["Send"].disabled and buttons(panel)["Stop"].disabled

    type_and_send(panel, "Something short")
    wait(panel)
    assert "turn 1." in reply_of(env_emu)  # the stopped turn was never sent as history
    assert "stopped" not in conversation_text(panel)  # the next turn replaces the stopped one
    assert [m["content"] for m in replicate_magic.history()] == ["Something short", reply_of(env_emu)]


def test_a_stop_whose_cancel_fails_says_what_may_still_run(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=WORDS, stall_after=3))
    type_and_send(panel, "Tell me a long story")
    wait_until(lambda: "word2" in conversation_text(panel))
    env_emu.inject(Faults(server_error=3))  # every try of the cancel fails
    buttons(panel)["Stop"].click()
    wait(panel)
    (prediction_id,) = list(env_emu.predictions)
    assert panel.model.status == (f"Stopped: could not cancel {prediction_id}: it may still be running, see "
                                  f"https://replicate.com/p/{prediction_id}; this turn is not in the history.")
    # It is still known as running: when the loop's HTTP session closes (as at the kernel's
    # exit), it is cancelled again, and now the API answers.
    assert env_emu.predictions[prediction_id].status == "processing"
    shared_loop().run(close_session())
    assert env_emu.predictions[prediction_id].status == "canceled"


def test_stop_during_cold_start_cancels_too(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(cold_start=4))
    type_and_send(panel, "Hi")
    wait_until(lambda: "Booting" in panel.model.status)  # the model's boot logs show meanwhile
    buttons(panel)["Stop"].click()
    assert env_emu.wait_for_cancel(5) in env_emu.predictions
    wait(panel)
    assert panel.model.status.startswith("Stopped")


def test_an_error_shows_in_the_status_line_and_the_conversation_stays(make_panel, env_emu):
    panel = make_panel()
    type_and_send(panel, "Keep me")
    wait(panel)
    before = replicate_magic.history()
    panel._picker.value = "nobody/no-such-model"  # typed into the picker: not one of its options
    type_and_send(panel, "Lost?")
    wait(panel)
    assert panel.model.error and "404" in panel.model.status and "404" in panel._status.value
    assert "rm-error" in panel._status.value
    assert TOKEN not in panel._status.value
    assert replicate_magic.history() == before and "Keep me" in conversation_text(panel)

    panel._picker.value = KNOWN_MODELS[1]
    type_and_send(panel, "Back again")
    wait(panel)
    assert not panel.model.error and "turn 2." in reply_of(env_emu)


def test_an_error_mid_stream_keeps_the_partial_reply_out_of_the_history(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=WORDS, error_after=4))
    type_and_send(panel, "Go")
    wait(panel)
    assert "CUDA out of memory" in panel.model.status and panel.model.error
    shown = conversation_text(panel)
    assert "word0 word1 word2 word3 failed: this turn is not in the history" in shown
    assert replicate_magic.history() == []


def test_markup_in_a_status_or_model_name_is_shown_as_text(make_panel):
    panel = make_panel()
    panel._picker.value = "<img src=x onerror=alert(1)>"
    type_and_send(panel, "Hi")
    wait(panel)
    assert "&lt;img src=x onerror=alert(1)&gt;" in panel._status.value and "<img" not in panel._status.value
    assert "<img" not in panel._live.value and "&lt;img src=x" in panel._live.value


def test_html_in_a_reply_is_shown_as_text_never_run(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=["See ", "<script>alert(1)</script>", " and ", '<img src=x onerror="alert(2)">']))
    type_and_send(panel, "Say something <b>bold</b>")
    wait(panel)
    shown = panel._history.value
    assert "<script" not in shown and "<img" not in shown and "<b>bold" not in shown
    assert "<script>alert(1)</script>" in conversation_text(panel)  # visible, as typed
    assert violations(shown, css={PANEL_CSS}) == []


def test_every_widget_value_of_a_hostile_turn_passes_the_allow_list(make_panel, env_emu):
    panel = make_panel()
    frames: list[str] = []
    panel._live.observe(lambda change: frames.append(change.new), names="value")
    env_emu.inject(Faults(tokens=["[x](&#106;avascript:1) ", "![](https://e.example/p.png) ", "``` a`b\n<svg onload=1>"],
                          logs=["<img src=x onerror=1>\x1b]0;t\x07"], cold_start=0.3))
    type_and_send(panel, "<iframe src=javascript:1>")
    wait(panel)
    for value in [*frames, panel._history.value, panel._status.value, panel._title.value]:
        assert violations(value, css={PANEL_CSS}, extra={"b": set()}) == [], value[:300]


def test_settings_and_system_prompt_reach_the_model(make_panel, env_emu):
    panel = make_panel(model_name="mistralai/mixtral-8x7b-instruct-v0.1")
    panel._temperature.value, panel._max_tokens.value, panel._system.value = 0.3, 42, "Be brief."
    type_and_send(panel, "Hi")
    wait(panel)
    sent = last_input(env_emu)
    assert (sent["temperature"], sent["max_new_tokens"]) == (0.3, 42)
    assert sent["prompt"].startswith("System: Be brief.")
    assert replicate_magic.history()[0] == {"role": "system", "content": "Be brief."}


def test_send_needs_a_prompt_and_one_turn_at_a_time(make_panel, env_emu):
    panel = make_panel()
    type_and_send(panel, "   ")
    assert panel.model.status == "Type a message first." and env_emu.predictions == {}
    env_emu.inject(Faults(stall_after=1))
    assert panel.model.send("First") is not None
    assert panel.model.send("Second") is None and "Still answering" in panel.model.status
    panel.model.stop()  # at once: before or while the prediction is being created
    wait(panel)
    time.sleep(0.3)  # a create already sent still lands; it must be cancelled, not left running
    made = list(env_emu.predictions.values())
    assert [p.status for p in made] == ["canceled"] * len(made) and env_emu.cancels == [p.id for p in made]
    assert panel.model.busy is False


def test_clear_forgets_the_conversation(make_panel, env_emu):
    panel = make_panel()
    type_and_send(panel, "Remember me")
    wait(panel)
    buttons(panel)["Clear"].click()
    assert replicate_magic.history() == [] and "is empty" in conversation_text(panel)
    assert "Remember me" not in conversation_text(panel)


def test_clear_while_streaming_stops_first(make_panel, env_emu):
    panel = make_panel()
    type_and_send(panel, "Keep?")
    wait(panel)
    env_emu.inject(Faults(stall_after=2))
    type_and_send(panel, "Streaming")
    wait_until(lambda: panel.model.draft is not None and panel.model.draft.reply)
    buttons(panel)["Clear"].click()
    env_emu.wait_for_cancel(5)
    wait(panel)
    assert replicate_magic.history() == [] and panel._live.value == ""
    assert "Keep?" not in conversation_text(panel) and "is empty now" in panel.model.status


def test_closing_the_panel_stops_its_turn(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(stall_after=1))
    type_and_send(panel, "Hi")
    wait_until(lambda: env_emu.predictions != {})
    panel.close()
    assert env_emu.wait_for_cancel(5) in env_emu.predictions


async def test_wait_does_not_block_the_event_loop(make_panel, env_emu):
    panel = make_panel()
    env_emu.inject(Faults(tokens=WORDS, tokens_per_second=200))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    panel.model.send("Hi")
    result = await asyncio.wait_for(panel.model.wait(), 10)
    task.cancel()
    assert result is not None and result.text == "".join(WORDS)
    assert ticks >= 5  # the loop kept running while the reply streamed


# -- shared with the magic --------------------------------------------------------------------------------


def test_magic_opens_a_panel_on_a_named_conversation(ip, make_panel):
    panel = ip.run_line_magic("replicate", "panel work")
    try:
        assert isinstance(panel, ChatPanel) and panel.model.chat == "work"
        assert panel.model.model_name == DEFAULT_MODEL
        assert replicate_magic.ChatPanel is ChatPanel
    finally:
        panel.close()
    with pytest.raises(UsageError, match="Too many"):
        ip.run_line_magic("replicate", "panel a b")


def test_panel_and_magic_continue_each_others_conversation(ip, make_panel, env_emu, capsys):
    panel = make_panel("shared")
    type_and_send(panel, "From the panel")
    wait(panel)
    ip.run_cell("%%replicate -c shared\nFrom a cell")  # a cell, so post_run_cell fires as in a notebook
    assert "turn 2." in reply_of(env_emu)
    assert "From a cell" in conversation_text(panel) and squash(reply_of(env_emu)) in conversation_text(panel)

    type_and_send(panel, "From the panel again")
    wait(panel)
    assert "turn 3." in reply_of(env_emu)
    assert [m["content"] for m in replicate_magic.history("shared") if m["role"] == "user"] == [
        "From the panel", "From a cell", "From the panel again",
    ]
    capsys.readouterr()


def test_a_turn_from_the_magic_replaces_a_failed_exchange(ip, make_panel, env_emu, capsys):
    panel = make_panel("mixed")
    panel._picker.value = "nobody/no-such-model"
    type_and_send(panel, "Lost?")
    wait(panel)
    assert "failed: this turn" in conversation_text(panel)
    ip.run_cell("%%replicate -c mixed\nFrom a cell")
    shown = conversation_text(panel)
    assert "From a cell" in shown and "Lost?" not in shown and "failed" not in shown
    capsys.readouterr()


def test_a_new_panel_shows_what_the_magic_discussed(ip, make_panel, env_emu, capsys):
    ip.run_cell_magic("replicate", "-c earlier -s 'You are terse.'", "Asked in a cell")
    panel = make_panel("earlier")
    assert "Asked in a cell" in conversation_text(panel) and squash(reply_of(env_emu)) in conversation_text(panel)
    assert panel._system.value == "You are terse."  # the conversation's system prompt
    capsys.readouterr()


def test_panel_from_the_magic_takes_the_configured_settings(ip, env_emu):
    ip.run_line_magic("config", "ReplicateMagics.timeout = 0.5")
    ip.run_line_magic("config", "ReplicateMagics.max_history = 3")
    try:
        panel = ip.run_line_magic("replicate", "panel cfg")
        assert (panel.model.timeout, panel.model.max_history) == (0.5, 3)
        env_emu.inject(Faults(stall_after=2))
        panel.model.send("Stall, please")
        wait(panel)
        assert "No data from the stream for 0.5 s" in panel.model.status  # the idle limit applied
        panel.close()
    finally:
        ip.run_line_magic("config", "ReplicateMagics.timeout = 180.0")
        ip.run_line_magic("config", "ReplicateMagics.max_history = 20")


def test_a_panel_made_in_code_honours_the_config_too(ip, make_panel, env_emu):
    ip.run_line_magic("config", "ReplicateMagics.default_inputs = {'seed': 7}")
    ip.run_line_magic("config", "ReplicateMagics.max_history = 2")
    try:
        panel = make_panel("coded", temperature=0.3)
        assert (panel.model.max_history, panel.model.temperature) == (2, 0.3)
        panel.model.send("Seeded?")
        wait(panel)
        sent = [r for r in env_emu.requests if r.method == "POST"][-1].json["input"]
        assert (sent["seed"], sent["temperature"]) == (7, 0.3)
    finally:
        ip.run_line_magic("config", "ReplicateMagics.default_inputs = {}")
        ip.run_line_magic("config", "ReplicateMagics.max_history = 20")


@pytest.mark.parametrize("setting, value, allowed", [
    ("timeout", 0, "a number > 0"), ("max_history", -1, "a whole number >= 0"),
    ("max_tokens", 0, "a whole number >= 1"), ("temperature", -0.5, "a number >= 0"),
])
def test_a_setting_out_of_bounds_is_refused_by_the_declared_rule(make_panel, setting, value, allowed):
    with pytest.raises(TraitError, match=f"^{setting}: invalid value .*allowed: {allowed}"):
        make_panel(**{setting: value})


def test_the_controls_take_their_bounds_from_the_declarations(make_panel):
    panel = make_panel()
    assert (panel._temperature.min, panel._temperature.max) == (0.0, 2.0)
    assert panel._max_tokens.min == 1


def test_a_misspelt_setting_is_an_error_not_ignored(make_panel):
    with pytest.raises(TypeError, match=r"unknown panel setting max_token; the settings are: .*max_tokens"):
        ChatPanel(max_token=5)


def test_a_model_that_makes_files_shows_them_in_the_panel_not_in_the_history(make_panel, env_emu):
    import base64
    from urllib.parse import urlsplit

    panel = make_panel(model_name="black-forest-labs/flux-schnell")
    type_and_send(panel, "a red fox")
    wait(panel)
    (prediction,) = env_emu.predictions.values()
    (url,) = prediction.output
    served = env_emu.files.get(urlsplit(url).path).data
    shown = panel._made.value
    assert f'<img src="data:image/webp;base64,{base64.b64encode(served).decode()}"' in shown
    assert "a red fox" in visible(shown) and "out-0.webp" in visible(shown)
    assert violations(shown) == []
    assert "1 file" in panel.model.status and not panel.model.error
    # The sliders hold values this model takes none of: not sent, and not listed as not taken.
    assert not {"temperature", "max_tokens"} & set(prediction.input)
    assert "not taken" not in panel.model.status, panel.model.status
    assert replicate_magic.history() == []  # not a chat turn
    assert panel._live.value == ""


def test_attached_images_go_to_the_vision_models_image_input_once(make_panel, env_emu):
    import hashlib

    image = _tiny_png()
    panel = make_panel(model_name="yorickvp/llava-13b")
    panel._attach.value = ({"name": "photo.png", "type": "image/png", "size": len(image),
                            "content": memoryview(image), "last_modified": __import__("datetime").datetime.now()},)
    assert "attached: photo.png" in visible(panel._attached.value)
    type_and_send(panel, "What is in this picture?")
    wait(panel)
    assert hashlib.sha256(image).hexdigest() in reply_of(env_emu)  # the model got these exact bytes
    assert panel.model.attachments == () and panel._attached.value == "" and panel._attach.value == ()
    type_and_send(panel, "And now?")
    wait(panel)
    assert "image" not in last_input(env_emu)  # sent with one message only


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"\x00\xff\x00\x00"  # one red pixel: filter byte, then RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
