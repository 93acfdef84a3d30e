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
        if "shows-traceback" in cell.metadata.get("tags", []):  # the user's own error, for {Err}: frames
            assert len(errors) == 1 and len(errors[0]["traceback"]) > 1
        elif "raises-exception" in cell.metadata.get("tags", []):
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


def test_batch_notebook_keeps_the_order_and_names_the_failure(env_emu, tmp_path):
    notebook = run_notebook(EXAMPLES / "batch.ipynb", tmp_path)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = next(c for c in code if c.source == "answers.errors")
    assert errors.outputs[0]["data"]["text/plain"].startswith("{1: 'The model failed: ")
    pairs = next(c for c in code if c.source.startswith("list(zip("))
    said = {p.input["prompt"]: "".join(p.output) for p in env_emu.predictions.values()}
    first = "Label this review as positive, negative or mixed, in one word: Great battery, awful screen."
    assert repr(said[first]) in pairs.outputs[0]["data"]["text/plain"]
    prompts = [p.input["prompt"] for p in env_emu.predictions.values()]
    assert prompts.count(first) == 1  # the --cache re-runs asked nothing again


def test_errors_sends_the_traceback_and_puts_code_into_new_cells(env_emu, tmp_path):
    notebook = run_notebook(EXAMPLES / "errors.ipynb", tmp_path)
    prompts = [p.input["prompt"] for p in env_emu.predictions.values()]
    assert len(prompts) == 3
    assert prompts[0].startswith("Explain this error in two sentences:\n\nTraceback (most recent call last):")
    assert prompts[0].endswith("ZeroDivisionError: division by zero")
    assert "def mean(xs):\n    return sum(xs) / len(xs)\n\nmean([])" in prompts[1]  # fix: the source too
    fix, code = [c for c in notebook.cells if c.cell_type == "code" and "-f code" in c.source]
    for cell in (fix, code):
        assert "the code is in a new cell below" in cell.outputs[-1]["data"]["text/plain"]


def test_data_notebook_describes_the_frame_parses_the_answer_and_runs_the_template(env_emu, tmp_path):
    notebook = run_notebook(EXAMPLES / "data.ipynb", tmp_path)
    prompts = [p.input["prompt"] for p in env_emu.predictions.values()]
    described = next(p for p in prompts if p.startswith("Which product sells best"))
    assert "100,000 rows x 3 columns" in described and "more rows)" in described and len(described) < 12_000
    assert "Variable `regions`" in described
    code = [c for c in notebook.cells if c.cell_type == "code"]
    parsed = next(c for c in code if c.source.startswith('ada["name"]'))
    assert parsed.outputs[0]["data"]["text/plain"].endswith(", 'int')")
    assert any(p.endswith("The tide came in at noon and went out at six; the harbour master logged both.")
               and p.startswith("Summarize in one sentence") for p in prompts)
