"""The example notebooks run top to bottom in a real kernel against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from replicate_magic.render import markdown_html

from .conftest import TOKEN

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_notebook(path: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def final_text(cell) -> str:
    """What the saved notebook keeps of a %%replicate cell: its first output's text, which
    its HTML renders."""
    data = cell.outputs[0]["data"]
    assert data["text/html"] == markdown_html(data["text/plain"])
    return data["text/plain"]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_example_runs_top_to_bottom(name, env_emu, tmp_path):
    notebook = run_notebook(EXAMPLES / name, tmp_path)
    saved = nbformat.writes(notebook)
    assert TOKEN not in saved
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" in cell.metadata.get("tags", []):
            assert len(errors) == 1 and len(errors[0]["traceback"]) == 1  # one line, no frames
        else:
            assert errors == []


def test_quickstart_saves_the_final_answers(env_emu, tmp_path):
    notebook = run_notebook(EXAMPLES / "quickstart.ipynb", tmp_path)
    replies = ["".join(p.output) for p in env_emu.predictions.values()]
    magic_cells = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("%%replicate")]
    answered = [c for c in magic_cells if "raises-exception" not in c.metadata.get("tags", [])]
    assert [final_text(c) for c in answered] == replies[: len(answered)]
    assert "turn 2" in final_text(answered[1])  # the second cell continued the conversation
    assert "tide pools" in final_text(answered[2])  # {topic} was expanded
    error_cell = next(c for c in magic_cells if "raises-exception" in c.metadata.get("tags", []))
    assert "404" in error_cell.outputs[-1]["traceback"][0]


def test_demo_command_streams_the_notebook(tmp_path):
    saved = tmp_path / "out.ipynb"
    result = subprocess.run(
        [sys.executable, "-m", "replicate_magic.demo", "--tokens-per-second", "400", "--save", str(saved)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "answering from the emulator" in result.stdout
    assert "turn 2. You said: “Now make it about mountains.”" in result.stdout
    notebook = json.loads(saved.read_text())
    assert any("text/html" in o.get("data", {}) for c in notebook["cells"] for o in c.get("outputs", []))


def test_media_notebook_keeps_its_files_in_the_saved_notebook(env_emu, tmp_path):
    import base64
    import re
    from urllib.parse import urlsplit

    notebook = run_notebook(EXAMPLES / "media.ipynb", tmp_path)
    saved = nbformat.reads(nbformat.writes(notebook), as_version=4)
    flux = next(c for c in saved.cells if c.cell_type == "code" and "num_outputs=2" in c.source)
    first = next(p for p in env_emu.predictions.values() if p.model == "black-forest-labs/flux-schnell")
    served = [env_emu.files.get(urlsplit(u).path).data for u in first.output]
    env_emu.forget_files()
    shown = flux.outputs[0]["data"]["text/html"]
    assert [base64.b64decode(d) for d in re.findall(r'<img src="data:image/webp;base64,([^"]+)"', shown)] == served
    music = next(c for c in saved.cells if c.cell_type == "code" and "musicgen" in c.source)
    assert '<audio controls src="data:audio/wav;base64,' in music.outputs[0]["data"]["text/html"]
    vision = next(c for c in saved.cells if c.cell_type == "code" and "llava" in c.source)
    assert __import__("hashlib").sha256(served[0]).hexdigest() in vision.outputs[0]["data"]["text/plain"]
    replayed = [c for c in saved.cells if c.cell_type == "code" and "--cache" in c.source][-1]
    assert "replayed from the log" in replayed.outputs[-1]["data"]["text/plain"]
