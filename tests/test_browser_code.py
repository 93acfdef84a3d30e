"""``-f code`` in a real browser: JupyterLab 4 and Debian's Chromium.

A cell fails; ``%replicate fix -f code`` below it streams the model's explanation, and
JupyterLab, honouring the kernel's ``set_next_input`` payload, inserts a new code cell right
below holding the reply's code block exactly (checked in the saved notebook, byte for byte),
above the cell that was next. One JupyterLab, one browser and one notebook (the fixtures of
test_browser.py, with a notebook of our own) serve the module. Screenshots go to
artifacts/screenshots/; code-notebook.png (cropped to the notebook) is the README's
docs/code-cell.png, copied there when REPLICATE_MAGIC_DOCS_SCREENSHOTS=1. In CI (CI=true)
these tests always run; elsewhere they skip, saying why, when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import nbformat
import pytest

from replicate_magic.emulator import Emulator

from .browser_harness import (
    CHROMIUM,
    REPO,
    SCREENSHOTS,
    JupyterServer,
    serve_notebook,
    skip_without_a_browser,
    squash,
    wait_for,
)
from .conftest import TOKEN

skip_without_a_browser()

from . import test_browser
from .test_browser import ChatNotebook

chat, emu = test_browser.chat, test_browser.emu  # its fixtures (pytest finds them by name); lab is ours

SOURCE = "def mean(xs):\n    return sum(xs) / len(xs)\n\nmean([])"
AFTER = "after = 'the cell that was below'"
CELLS = ["%load_ext replicate_magic", SOURCE, "%replicate fix -f code", AFTER]
LOAD, FAILING, FIX, NEXT = range(len(CELLS))


@pytest.fixture(scope="module")
def lab(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp("lab-code")
    server = serve_notebook(home, "chat.ipynb", CELLS, emu.base_url, TOKEN, frontend="lab")  # chat: the fixture's
    try:
        yield server
    finally:
        server.stop()


def test_fix_with_f_code_creates_a_new_cell_below_holding_the_code(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(FAILING)
    assert "ZeroDivisionError" in chat.notebook.output_text(FAILING)
    chat.ensure(FIX)

    (prediction_id,) = chat.predictions[FIX]
    prediction = emu.predictions[prediction_id]
    assert SOURCE in prediction.input["prompt"] and "ZeroDivisionError: division by zero" in prediction.input["prompt"]
    reply = chat.reply(FIX)
    code = reply.split("```python\n", 1)[1].split("\n```", 1)[0]  # the emulator's block (its own format)
    cells = chat.page.locator(".jp-Notebook .jp-Cell")
    wait_for(lambda: cells.count() == len(CELLS) + 1, 10, "JupyterLab to insert the new cell")
    new = chat.notebook.cell(FIX + 1)
    assert "jp-CodeCell" in (new.get_attribute("class") or "")
    assert chat.notebook.prompt(FIX + 1) == ""  # not run: the user reads it first
    shown = squash(chat.notebook.output_text(FIX))
    assert squash(reply.split("```python")[0]) in shown and "the code is in a new cell below" in shown
    chat.notebook.screenshot("code-cell-below")

    chat.notebook.save()
    saved = nbformat.read(chat.path, as_version=4)
    assert [cell.source for cell in saved.cells] == [*CELLS[: FIX + 1], code, AFTER]  # exactly, right below
    assert saved.cells[FIX + 1].cell_type == "code"

    # The README's picture: the failing cell, the fix and the new cell, cropped to the notebook.
    notebook = chat.page.locator(".jp-NotebookPanel-notebook").first.bounding_box()
    top = chat.notebook.cell(FAILING).bounding_box()["y"] - 8
    bottom = chat.notebook.cell(FIX + 2).bounding_box()["y"] - 2
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chat.page.screenshot(path=str(SCREENSHOTS / "code-notebook.png"),
                         clip={"x": notebook["x"], "y": top, "width": notebook["width"], "height": bottom - top})
    if os.environ.get("REPLICATE_MAGIC_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(SCREENSHOTS / "code-notebook.png", REPO / "docs" / "code-cell.png")
