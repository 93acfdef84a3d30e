"""A replay from the local log in a real browser: JupyterLab 4 and Debian's Chromium.

A notebook cell runs twice with ``--cache``: the second run shows the same reply with the
"replayed from the log" line under it, and asks the emulator nothing. The saved notebook's
HTML outputs pass the allow-list. The kernel writes to a log of this module's own (set with
``%config ReplicateMagics.log_path`` in the notebook's first cell). Screenshot:
artifacts/screenshots/log-replay.png.

In CI (CI=true) this test always runs; elsewhere it skips without /usr/bin/chromium.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import nbformat
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
from .html_allowlist import violations

skip_without_a_browser()

from playwright.sync_api import sync_playwright

MARKER = re.compile(r"replayed from the log, \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC: nothing was asked or billed")
SETUP, ASK = 0, 1


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(token=TOKEN, tokens_per_second=0.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def lab(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterServer, Path]]:
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp("lab-log")
    log = tmp_path_factory.mktemp("log") / "log.db"
    cells = [f"%load_ext replicate_magic\n%config ReplicateMagics.log_path = {str(log)!r}",
             "%%replicate --cache --no-history\nName three tide pool animals."]
    server = serve_notebook(home, "replay.ipynb", cells, emu.base_url, TOKEN, frontend="lab")
    try:
        yield server, log
    finally:
        server.stop()


def _creates(emu: Emulator) -> int:
    return len([r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")])


def test_a_cell_run_again_with_cache_shows_the_replay_marker(lab: tuple[JupyterServer, Path], emu: Emulator) -> None:
    server, log = lab
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, server.home / "chromium-profile")
        try:
            page = context.pages[0] if context.pages else context.new_page()
            notebook = Notebook(page).open(server.notebook_url("replay.ipynb"))
            notebook.run(SETUP)
            notebook.wait_done(SETUP)
            notebook.run(ASK)
            notebook.wait_done(ASK)
            (prediction_id,) = emu.predictions
            reply = squash("".join(emu.predictions[prediction_id].output))
            first = squash(notebook.output_text(ASK))
            assert reply in first and "tokens" in first
            assert not MARKER.search(first) and "replayed" not in first
            requests, count = len(emu.requests), notebook.prompt(ASK)

            notebook.run(ASK)  # the same cell again (its count was shown, so run() cannot tell it started)
            wait_for(lambda: notebook.prompt(ASK) not in ("", "*", count), 30, "the second run to finish")
            second = squash(notebook.output_text(ASK))
            notebook.screenshot("log-replay")

            assert MARKER.search(second), second  # what the user reads under the reply
            assert reply in second  # the same reply, shown again
            assert second.split(reply)[0] == first.split(reply)[0]  # nothing new above it
            assert len(emu.requests) == requests and _creates(emu) == 1  # asked nothing

            notebook.save()
        finally:
            context.close()

    saved = nbformat.read(server.root / "replay.ipynb", as_version=4)
    outputs = saved.cells[ASK].outputs
    assert [o.output_type for o in outputs] == ["display_data", "display_data"]
    assert squash(outputs[0].data["text/plain"]) == reply
    assert MARKER.search(outputs[1].data["text/plain"]) and MARKER.search(outputs[1].data["text/html"])
    for output in outputs:  # the HTML the kernel sent, as the notebook keeps it
        assert violations(output.data["text/html"]) == [], output.data["text/html"][:500]
    assert TOKEN not in (server.root / "replay.ipynb").read_text()
    with closing(sqlite3.connect(log)) as db:  # the notebook's own log: the reply, then its replay
        rows = db.execute("SELECT status, replayed FROM exchanges WHERE prompt = ? ORDER BY id",
                          ("Name three tide pool animals.",)).fetchall()
    assert rows == [("succeeded", 0), ("succeeded", 1)]
