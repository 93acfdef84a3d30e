"""Files a model makes, in a real browser: JupyterLab 4 and Debian's Chromium (issue 11).

Images from flux-schnell show under their cell, decoded by the browser, in order, byte for
byte what the file host served; musicgen's WAV gets a player whose length is the one asked
for; the chat panel shows its images in its files widget; an "image" whose bytes are HTML
shows as a line and runs nothing. One JupyterLab, one browser and one notebook (the fixtures
of test_browser.py) serve the module; each test runs the cells it needs if no earlier test
did. Screenshots go to artifacts/screenshots/files-*.png; files-notebook.png (the cells with
images and audio, cropped to the notebook) is the README's docs/files.png, copied there when
REPLICATE_MAGIC_DOCS_SCREENSHOTS=1.

In CI (CI=true) these tests always run; elsewhere they skip without /usr/bin/chromium.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from replicate_magic.emulator import Emulator, Faults

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

FLUX = "black-forest-labs/flux-schnell"
SECONDS = 2
CELLS = [
    "%load_ext replicate_magic",
    f"%%replicate -m {FLUX} -i num_outputs=2 -o foxes\nA red fox in the snow, watercolour",
    f"%%replicate -m meta/musicgen -i duration={SECONDS}\nWaves on a pebble beach",
    f"import replicate_magic\nreplicate_magic.ChatPanel(model_name={FLUX!r})",
    f"%%replicate -m {FLUX}\nSomething that is not an image",
]
LOAD, IMAGES, AUDIO, PANEL, HOSTILE = range(len(CELLS))

# What the page has of each img under a root: decoded size, shown size, where it points.
_IMAGES_JS = """root => [...root.querySelectorAll('img')].map(img => ({
    src: img.getAttribute('src'), complete: img.complete,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    width: img.getBoundingClientRect().width, height: img.getBoundingClientRect().height}))"""
# The first audio element's state once its metadata is loaded (null after 10 s without).
_AUDIO_JS = """async root => {
    const audio = root.querySelector('audio');
    if (!audio) return null;
    if (audio.readyState < 1) {
        const loaded = new Promise(done => audio.addEventListener('loadedmetadata', () => done(true), {once: true}));
        if (!await Promise.race([loaded, new Promise(done => setTimeout(() => done(false), 10000))])) return null;
    }
    const box = audio.getBoundingClientRect();
    return {controls: audio.controls, duration: audio.duration, error: audio.error && audio.error.code,
            width: box.width, height: box.height, src: audio.getAttribute('src')};
}"""


@pytest.fixture(scope="module")
def lab(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    if not CHROMIUM.exists():  # only reached in CI, where a skip would hide the gap
        pytest.fail(f"CI=true but {CHROMIUM} is missing: install it with apt-get install -y chromium")
    home = tmp_path_factory.mktemp("lab-files")
    server = serve_notebook(home, "chat.ipynb", CELLS, emu.base_url, TOKEN, frontend="lab")  # chat: the fixture's
    try:
        yield server
    finally:
        server.stop()


def served(emu: Emulator, url: str) -> bytes:
    stored = emu.files.get(urlparse(url).path)
    assert stored is not None, f"the file host no longer has {url}"
    return stored.data


def decoded(src: str, content_type: str) -> bytes:
    prefix = f"data:{content_type};base64,"
    assert src.startswith(prefix), src[:80]
    return base64.b64decode(src[len(prefix):], validate=True)


def images_shown(root: Any, count: int) -> list[dict[str, Any]]:
    """The img elements under ``root`` once there are ``count`` and the browser decoded them all."""
    return wait_for(lambda: len(found := root.evaluate(_IMAGES_JS)) == count
                    and all(i["complete"] and i["naturalWidth"] > 0 for i in found) and found,
                    15, f"{count} decoded image(s)")


def shot(chat: ChatNotebook, name: str, clip: dict[str, float] | None = None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chat.page.screenshot(path=str(SCREENSHOTS / f"files-{name}.png"), clip=clip)


def test_two_images_show_under_their_cell_as_served(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(IMAGES)
    (prediction_id,) = chat.predictions[IMAGES]
    urls = emu.predictions[prediction_id].output
    assert len(urls) == 2
    files = [served(emu, url) for url in urls]
    assert files[0] != files[1]  # else the order would prove nothing

    output = chat.notebook.cell(IMAGES).locator(".jp-Cell-outputArea")
    shown = images_shown(output, 2)
    assert [decoded(i["src"], "image/webp") for i in shown] == files  # in order, byte for byte
    assert [(i["naturalWidth"], i["naturalHeight"]) for i in shown] == [(256, 256)] * 2  # 1024 x 0.25
    assert all(i["width"] == 256 and i["height"] == 256 for i in shown)  # at their size, not squashed
    figures = output.locator(".rm-files figure.rm-file")
    assert figures.count() == 2 and all(figures.nth(n).is_visible() for n in range(2))
    captions = [squash(figures.nth(n).locator("figcaption").inner_text()) for n in range(2)]
    assert [c.split(" · ")[0] for c in captions] == ["out-0.webp", "out-1.webp"]
    assert all(c.endswith(" · image/webp") for c in captions)
    boxes = [figures.nth(n).bounding_box() for n in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # a grid: side by side
    assert "2 files" in squash(chat.notebook.output_text(IMAGES))
    assert emu.file_host_authorizations == 0
    shot(chat, "images")


def test_an_audio_player_shows_with_the_length_asked_for(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(AUDIO)
    (prediction_id,) = chat.predictions[AUDIO]
    (url,) = emu.predictions[prediction_id].output
    output = chat.notebook.cell(AUDIO).locator(".jp-Cell-outputArea")
    player = output.locator(".rm-file audio")
    player.wait_for(timeout=15_000)
    assert player.is_visible()
    audio = output.evaluate(_AUDIO_JS)
    assert audio is not None, "the audio's metadata never loaded"
    assert audio["controls"] and audio["error"] is None
    assert audio["duration"] == pytest.approx(SECONDS, abs=0.05)
    assert audio["width"] > 100 and audio["height"] > 20  # a player a user can click, not a dot
    assert decoded(audio["src"], "audio/wav") == served(emu, url)
    caption = squash(output.locator(".rm-file figcaption").inner_text())
    assert caption.startswith("out.wav · ") and caption.endswith(" · audio/wav"), caption

    # The README's picture: the cells with the images and the player, cropped to the notebook.
    chat.ensure(IMAGES)
    notebook = chat.page.locator(".jp-NotebookPanel-notebook").first.bounding_box()
    top = chat.notebook.cell(LOAD).bounding_box()["y"] - 8
    bottom = chat.notebook.cell(AUDIO + 1).bounding_box()["y"] - 2  # above the next cell's border
    clip = {"x": notebook["x"], "y": top, "width": notebook["width"], "height": bottom - top}
    shot(chat, "notebook", clip)
    if os.environ.get("REPLICATE_MAGIC_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(SCREENSHOTS / "files-notebook.png", REPO / "docs" / "files.png")


def test_the_panel_shows_an_image_in_its_files_widget(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(PANEL)
    files = chat.panel.locator(".replicate-chat-files")
    known = set(emu.predictions)
    chat.send("A heron at dawn")
    (shown,) = images_shown(files, 1)
    (prediction_id,) = [p for p in emu.predictions if p not in known]
    (url,) = emu.predictions[prediction_id].output
    assert decoded(shown["src"], "image/webp") == served(emu, url)
    assert shown["width"] > 0 and files.locator("img").is_visible()
    assert "A heron at dawn" in squash(files.inner_text()) and "out-0.webp" in squash(files.inner_text())
    wait_for(lambda: "1 file" in chat.status() and chat.button("Send").is_enabled(), 15, "the panel to be ready")
    history = chat.panel.locator(".replicate-chat-conversation > *").first
    assert not history.locator("img").count()  # in the files widget, not in the history
    shot(chat, "panel", chat.panel.bounding_box())


def test_html_served_as_an_image_shows_as_a_line_and_runs_nothing(chat: ChatNotebook, emu: Emulator) -> None:
    chat.ensure(HOSTILE - 1)  # the cells before it first, so the next prediction is this cell's
    emu.inject(Faults(file_body=b"<img src=x onerror=window.pwned=1>", file_content_type="image/png"))
    chat.ensure(HOSTILE)
    output = chat.notebook.cell(HOSTILE).locator(".jp-Cell-outputArea")
    wait_for(lambda: output.locator("figure.rm-file").count(), 10, "the file's line")
    chat.page.wait_for_timeout(500)  # time for an onerror to fire, had an img been made
    assert output.locator("img").count() == 0 and output.locator("audio, video, iframe, object, embed").count() == 0
    line = squash(output.locator("figure.rm-file").inner_text())
    # The name's extension and the type come from the bytes, not from the server's header.
    assert line == "out-0 · 34 bytes · application/octet-stream", line
    assert "onerror" not in chat.notebook.output_text(HOSTILE)  # not even as text
    assert chat.page.evaluate("window.pwned") is None
    shot(chat, "hostile", chat.notebook.cell(HOSTILE).bounding_box())
