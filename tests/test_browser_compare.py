"""Models side by side in a real browser: JupyterLab 4 and Debian's Chromium.

The columns of ``%%replicate -m A -m B`` and of the panel's "Compare with" stand side by
side on the page (not stacked) and their text grows while the models stream. One
JupyterLab, one browser and one notebook serve the module; screenshots go to
artifacts/screenshots/. In CI (CI=true) these tests always run; elsewhere they skip, saying
why, when /usr/bin/chromium is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from replicate_magic.emulator import Emulator

from .browser_harness import (
    CHROMIUM,
    JupyterServer,
    Notebook,
    launch_chromium,
    serve_notebook,
    skip_without_a_browser,
    squash,
    wait_for,
)
from .conftest import TOKEN

skip_without_a_browser()

from playwright.sync_api import sync_playwright

LLAMA = "meta/meta-llama-3-70b-instruct"
GPT = "openai/gpt-4o-mini"
CELLS = [
    "%load_ext replicate_magic",
    f"%%replicate -m {LLAMA} -m {GPT} --max-tokens 60\nCompare the rivers of Europe.",
    f"from replicate_magic import ChatPanel\nChatPanel(chat='side', compare_with='{GPT}')",
]
LOAD, COMPARE, PANEL = range(len(CELLS))


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(token=TOKEN, tokens_per_second=15.0) as emulator:  # ~4 s a reply: time to watch
        yield emulator


@pytest.fixture(scope="module")
def lab(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp("lab")
    server = serve_notebook(home, "compare.ipynb", CELLS, emu.base_url, TOKEN, frontend="lab")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def notebook(lab: JupyterServer) -> Iterator[Notebook]:
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, lab.home / "chromium-profile")
        try:
            page = context.pages[0] if context.pages else context.new_page()
            opened = Notebook(page).open(lab.notebook_url("compare.ipynb"))
            opened.run(LOAD)
            opened.wait_done(LOAD)
            yield opened
        finally:
            context.close()


def replies(emu: Emulator, known: set[str]) -> dict[str, str]:
    return {p.model: "".join(p.output) for p in emu.predictions.values() if p.id not in known}


def assert_side_by_side(columns: Any) -> None:
    """Two columns in one row: the same top, the second to the right of the first, both wide."""

    def boxes() -> Any:  # each frame replaces the output's nodes: a box read meanwhile is None
        found = [columns.nth(i).bounding_box() for i in range(2)]
        return None if None in found else found

    first, second = wait_for(boxes, 5, "both columns to be laid out")
    assert abs(first["y"] - second["y"]) < 2, (first, second)
    assert second["x"] >= first["x"] + first["width"] - 1, (first, second)
    assert min(first["width"], second["width"]) > 200, (first, second)


def lengths(columns: Any) -> list[int]:
    return [len(columns.nth(i).inner_text()) for i in range(columns.count())]


def assert_both_grow(columns: Any, running: Any) -> None:
    """Both columns hold part of a reply, then more of it, while the models still stream."""
    before = wait_for(lambda: running() and columns.count() == 2 and all("This is" in columns.nth(i).inner_text()
                                                                           for i in range(2)) and lengths(columns),
                      20, "both replies to start")
    later = wait_for(lambda: running() and all(b < a for b, a in zip(before, lengths(columns), strict=True))
                     and lengths(columns), 10, "both replies to grow")
    assert all(b < a for b, a in zip(before, later, strict=True))


def test_the_magics_columns_stand_side_by_side_and_stream(notebook: Notebook, emu: Emulator) -> None:
    known = set(emu.predictions)
    notebook.run(COMPARE)
    columns = notebook.cell(COMPARE).locator(".rm-columns .rm-column")
    assert_both_grow(columns, lambda: notebook.busy(COMPARE))
    assert_side_by_side(columns)
    notebook.screenshot("compare-magic-streaming")
    notebook.wait_done(COMPARE)
    for model, reply in replies(emu, known).items():
        shown = squash(columns.nth([LLAMA, GPT].index(model)).inner_text())
        assert shown.startswith(model) and squash(reply) in shown and "60 tokens" in shown, shown
    assert "no reply was recorded" in notebook.output_text(COMPARE)
    notebook.screenshot("compare-magic-done")


def test_the_panels_comparison_streams_into_columns_side_by_side(notebook: Notebook, emu: Emulator) -> None:
    notebook.run(PANEL)
    notebook.wait_done(PANEL)
    panel = notebook.page.locator(".replicate-chat-panel").first
    panel.get_by_placeholder("Message").fill("Compare the tides.")
    panel.get_by_role("button", name="Send", exact=True).click()
    columns = panel.locator(".rm-columns .rm-column")
    assert_both_grow(columns, lambda: panel.get_by_role("button", name="Stop", exact=True).is_enabled())
    assert_side_by_side(columns)
    notebook.screenshot("compare-panel-streaming")
    status = panel.locator(".replicate-chat-status")
    wait_for(lambda: "2 of 2 models replied" in status.inner_text(), 20, "both replies to complete")
    assert all("tokens" in columns.nth(i).inner_text() for i in range(2))
    notebook.screenshot("compare-panel-done")
