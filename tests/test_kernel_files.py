"""Output files in real kernels, as a notebook shows and saves them (issue 11).

The displayed image is the served file, byte for byte, embedded in the output: a notebook
saved after the file host forgot the file still shows it. A model that does not stream
shows its progress in the reply's area, and an interrupt cancels it on Replicate.
"""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import urlsplit

import nbformat
import pytest

from replicate_magic.emulator import Faults

from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import html

FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
_DATA_URI = re.compile(r'<img src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')


def _final_html(cell) -> str:
    """The reply area's last state: what a saved notebook keeps."""
    shown = cell.of_type("display_data", "update_display_data")
    return html(shown[0] if len(shown) == 1 else [m for m in shown if m.type == "update_display_data"][-1])


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_images_are_embedded_as_served_and_survive_the_file_host(kernel, emu, fmt):
    cell = kernel.ok(f"%%replicate -m {FLUX} -i num_outputs=2 -i output_format={fmt}\na red fox")
    prediction = next(iter(emu.predictions.values()))
    served = [emu.files.get(urlsplit(url).path).data for url in prediction.output]
    shown = _final_html(cell)
    embedded = [(kind, base64.b64decode(data)) for kind, data in _DATA_URI.findall(shown)]
    assert embedded == [(f"image/{fmt}", served[0]), (f"image/{fmt}", served[1])]
    assert emu.file_host_authorizations == 0

    emu.forget_files()  # an hour later: the URLs answer 404
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%%replicate ...")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/html": shown})]
    reread = nbformat.reads(nbformat.writes(nb), as_version=4)
    kept = reread.cells[0].outputs[0]["data"]["text/html"]
    assert [base64.b64decode(d) for _, d in _DATA_URI.findall(kept)] == served


def test_a_model_that_does_not_stream_shows_progress_and_an_interrupt_cancels_it(kernel, emu):
    emu.inject(Faults(tokens_per_second=4))  # 50 steps at 4 a second: about 12 s
    cell = kernel.send(f"%%replicate -m {SDXL}\na slow cat")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            "/50 steps (" in html(m) for m in cell.of_type("display_data", "update_display_data")):
        kernel._drain(0.05)
    statuses = [html(m) for m in cell.of_type("display_data", "update_display_data")]
    assert any(re.search(r"processing · [█░]{10} \d+/50 steps \(\d+%\) · \d+ s", s) for s in statuses), statuses
    kernel.interrupt()
    kernel.wait(cell)
    assert emu.wait_for_cancel() == next(iter(emu.predictions))
    assert cell.status == "error" and cell.reply["ename"] == "ReplyInterrupted"
    assert "interrupted" in _final_html(cell)
