"""The magic and the chat panel in a real browser: JupyterLab 4 and Debian's Chromium.

One JupyterLab, one browser and one notebook serve the whole module (a kernel start and a
page load cost seconds); each test runs the cells it needs if no earlier test did. The
emulator runs in this process; the server's environment points kernels at it. Every test
keeps a screenshot in artifacts/screenshots/.

In CI (CI=true) these tests always run: a missing browser or package is a failure there.
Elsewhere they skip, saying why, when /usr/bin/chromium is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from replicate_magic.catalog import DEFAULT_MODEL
from replicate_magic.emulator import Emulator, Faults

from .browser_harness import (
    CHROMIUM,
    JupyterServer,
    Notebook,
    PanelOnPage,
    launch_chromium,
    serve_notebook,
    skip_without_a_browser,
    squash,
    wait_for,
)
from .conftest import TOKEN

skip_without_a_browser()

from playwright.sync_api import sync_playwright

SLOW = 15.0  # tokens per second: slow enough to watch a reply arrive
CELLS = [
    "%load_ext replicate_magic",
    "%%replicate -c browser\nWrite about the sea.",
    "%replicate panel browser",
    "%%replicate -c browser\nOne more, from a cell.",
    "%%replicate --no-history\nRepeat what I paste.",
]
LOAD, MAGIC, PANEL, MAGIC_AFTER, HOSTILE = range(len(CELLS))


def words(prefix: str, count: int = 30) -> list[str]:
    return [f" {prefix}{n}" for n in range(count)]


class ChatNotebook(PanelOnPage):
    """The module's notebook: runs each cell at most once, and remembers its predictions."""

    def __init__(self, notebook: Notebook, emu: Emulator, path: Path) -> None:
        self.notebook = notebook
        self.page = notebook.page
        self.emu = emu
        self.path = path
        self.predictions: dict[int, list[str]] = {}  # cell -> ids of the predictions it made
        self._known: dict[int, set[str]] = {}  # cell -> predictions before it started

    def start(self, index: int) -> None:
        for earlier in range(index):
            self.ensure(earlier)
        self._known[index] = set(self.emu.predictions)
        self.notebook.run(index)

    def finish(self, index: int) -> None:
        self.notebook.wait_done(index)
        self.predictions[index] = [p for p in self.emu.predictions if p not in self._known[index]]

    def ensure(self, index: int) -> None:
        if index not in self._known:
            self.start(index)
            self.finish(index)

    def reply(self, index: int) -> str:
        (prediction_id,) = self.predictions[index]
        return "".join(self.emu.predictions[prediction_id].output)

    # -- the panel, as a user finds it on the page (PanelOnPage has its text) ----------------

    def button(self, name: str) -> Any:
        return self.panel.get_by_role("button", name=name, exact=True)

    def send(self, text: str) -> None:
        self.panel.get_by_placeholder("Message").fill(text)
        self.button("Send").click()

    def wait_answered(self, reply: str, timeout: float = 20) -> None:
        """Until the whole reply shows and the panel is ready for the next message."""
        wait_for(lambda: squash(reply) in self.conversation() and "tokens" in self.status()
                 and self.button("Send").is_enabled(), timeout, f"the reply {reply[:30]!r}… to complete")

    def wait_status(self, *fragments: str, timeout: float = 20) -> str:
        return wait_for(lambda: any(f in (s := self.status()) for f in fragments) and s, timeout,
                        f"the status line to say {' or '.join(fragments)!r}")


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(token=TOKEN, tokens_per_second=0.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def lab(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp("lab")
    server = serve_notebook(home, "chat.ipynb", CELLS, emu.base_url, TOKEN, frontend="lab")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chat(lab: JupyterServer, emu: Emulator) -> Iterator[ChatNotebook]:
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, lab.home / "chromium-profile")
        try:
            page = context.pages[0] if context.pages else context.new_page()
            notebook = Notebook(page).open(lab.notebook_url("chat.ipynb"))
            yield ChatNotebook(notebook, emu, lab.root / "chat.ipynb")
        finally:
            context.close()


@pytest.fixture(autouse=True)
def screenshot(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "chat" in request.fixturenames:
        request.getfixturevalue("chat").notebook.screenshot(request.node.name)


def test_magic_reply_appears_while_the_cell_runs(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(LOAD)
    emu.inject(Faults(tokens=words("m"), tokens_per_second=SLOW))
    chat.start(MAGIC)
    partial = wait_for(lambda: chat.notebook.busy(MAGIC) and "m3" in (t := chat.notebook.output_text(MAGIC)) and t,
                       10, "part of the reply while the cell runs")
    assert "m29" not in partial  # caught mid-stream, not after the fact
    chat.finish(MAGIC)
    shown = squash(chat.notebook.output_text(MAGIC))
    assert squash("".join(words("m"))) in shown and "30 tokens" in shown


def test_panel_send_streams_a_reply(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(PANEL)
    emu.inject(Faults(tokens=words("p"), tokens_per_second=SLOW))
    chat.send("Tell me about tides.")
    partial = wait_for(lambda: "p3" in (t := chat.conversation()) and t, 10, "part of the reply in the panel")
    assert "p29" not in partial and chat.button("Send").is_disabled()
    chat.wait_answered("".join(words("p")))
    assert "Tell me about tides." in chat.conversation()
    assert chat.panel.get_by_placeholder("Message").input_value() == ""


def test_stop_cancels_the_prediction_and_the_next_send_works(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(PANEL)
    emu.inject(Faults(tokens=words("s"), stall_after=5))
    known = set(emu.predictions)
    chat.send("A very long story, please.")
    wait_for(lambda: "s4" in chat.conversation(), 10, "the reply to start")
    chat.button("Stop").click()
    (stopped,) = [p for p in emu.predictions if p not in known]
    assert emu.wait_for_cancel(10) == stopped  # the emulator (Replicate) saw the cancel
    chat.wait_status("Stopped")
    assert "stopped: this turn is not in the history" in chat.conversation()

    emu.inject(Faults(tokens=words("n", 8)))
    chat.send("Something short instead.")
    chat.wait_answered("".join(words("n", 8)))
    assert "stopped:" not in chat.conversation()


def test_an_unknown_model_shows_an_error_and_keeps_the_conversation(chat: ChatNotebook) -> None:
    chat.ensure(PANEL)
    before = chat.conversation()
    picker = chat.panel.get_by_placeholder("owner/name")
    picker.fill("nobody/no-such-model")
    chat.send("Are you there?")
    status = chat.wait_status("404")
    assert "check the model name" in status
    assert chat.conversation().startswith(before)  # earlier turns still shown
    assert "failed: this turn is not in the history" in chat.conversation()
    picker.fill(DEFAULT_MODEL)


def test_saved_and_reopened_notebook_shows_the_final_answers(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(PANEL)
    emu.inject(Faults(tokens=words("c", 10)))
    chat.ensure(MAGIC_AFTER)  # the magic continues the panel's conversation...
    after = squash("".join(words("c", 10)))
    wait_for(lambda: after in chat.conversation(), 10, "the panel to show the magic's turn")  # ...the panel shows it
    assert "failed:" not in chat.conversation()  # a failed exchange shown before is gone now

    chat.notebook.save()
    saved = nbformat.read(chat.path, as_version=4)
    for index in (MAGIC, MAGIC_AFTER):  # text for terminals, our HTML for notebooks
        data = saved.cells[index].outputs[0]["data"]
        assert data["text/plain"] == chat.reply(index)
        assert all(word.strip() in data["text/html"] for word in chat.reply(index).split())
    assert TOKEN not in chat.path.read_text()

    chat.page.reload()
    chat.notebook.open(chat.page.url)
    for index in (MAGIC, MAGIC_AFTER):  # outputs render a moment after the cells appear
        wait_for(lambda i=index: squash(chat.reply(i)) in squash(chat.notebook.output_text(i)), 15,
                 f"cell {index} to show its final answer")
    # The kernel still runs, so JupyterLab rebuilds the panel from it, conversation and all.
    wait_for(lambda: chat.page.locator(".replicate-chat-panel").count(), 15, "the panel to come back")
    assert after in chat.conversation()


def test_html_in_a_magic_reply_is_shown_not_run(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(HOSTILE - 1)  # the cells before it run first, so the next prediction is this cell's
    emu.inject(Faults(tokens=['<img src="x" onerror="window.__pwned = 1">', " and ", "<script>window.__pwned = 2</script>"]))
    chat.ensure(HOSTILE)
    shown = chat.notebook.output_text(HOSTILE)
    assert '<img src="x" onerror="window.__pwned = 1">' in shown and "<script>" in shown  # as text
    assert chat.page.evaluate("window.__pwned") is None
