"""``python -m replicate_magic``: its own parser, built from the same declarations as the magic's.

Run in-process through ``main`` (recording what reached the bundled emulator) and as a real
subprocess where standard input and exit codes matter.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from replicate_magic import __main__ as cli
from replicate_magic import emulator
from replicate_magic.emulator import Emulator


@pytest.fixture
def sent(monkeypatch):
    """The inputs of every prediction the CLI's emulator was asked to create."""
    inputs: list[dict] = []

    class Recording(Emulator):
        def __exit__(self, *exc_info) -> None:
            inputs.extend(r.json["input"] for r in self.requests
                          if r.method == "POST" and r.path.endswith("predictions"))
            super().__exit__(*exc_info)

    monkeypatch.setattr(emulator, "Emulator", Recording)
    for name in ("REPLICATE_API_TOKEN", "REPLICATE_BASE_URL"):
        monkeypatch.setenv(name, "unused")  # so that the CLI's own changes are undone after the test
    return inputs


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "replicate_magic", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_an_option_value_equal_to_a_prompt_word_is_still_an_option(sent, capsys):
    assert cli.main(["--emulator", "--stop", "Hello", "--max-tokens", "5", "Hello", "there"]) == 0
    (given,) = sent
    assert given["prompt"] == "Hello there"
    assert given["max_tokens"] == 5
    assert given["stop_sequences"] == "Hello"


def test_options_may_follow_prompt_words(sent, capsys):
    assert cli.main(["--emulator", "Tell", "-t", "0.5", "me"]) == 0
    (given,) = sent
    assert (given["prompt"], given["temperature"]) == ("Tell me", 0.5)


def test_after_a_double_dash_every_word_is_prompt(sent, capsys):
    assert cli.main(["--emulator", "--max-tokens", "3", "--", "-t", "1"]) == 0
    (given,) = sent
    assert given["prompt"] == "-t 1"
    assert "temperature" not in given


def test_a_dash_reads_the_prompt_from_standard_input():
    done = run("--emulator", "--max-tokens", "60", "-", stdin="Zebras crossing\n")
    assert done.returncode == 0, done.stderr
    assert "Zebras crossing" in done.stdout  # the emulator repeats the prompt it was sent
    assert "meta/meta-llama-3-70b-instruct" in done.stderr  # the metrics line


@pytest.mark.parametrize("flag", [["-c", "x"], ["-o", "reply"], ["--new"], ["--no-history"], ["-f", "text"],
                                  ["--no-expand"], ["--temp", "1"], ["--max", "3"]])
def test_notebook_flags_and_abbreviations_are_refused_not_ignored(flag):
    done = run("--emulator", *flag, "Hi")
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == f"usage error: unrecognized arguments: {flag[0]} (see python -m replicate_magic --help)"


def test_a_value_out_of_bounds_names_the_flag_and_the_range():
    done = run("--emulator", "--top-p", "1.5", "Hi")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "usage error: argument --top-p: invalid value 1.5 (allowed: a number > 0 and <= 1) "
        "(see python -m replicate_magic --help)"
    ]


def test_no_prompt_at_all_is_one_line():
    done = run("--emulator", stdin="")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["usage error: no prompt: pass it as an argument or on standard input"]


def test_help_lists_the_cli_options_only():
    done = run("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m replicate_magic")
    for shown in ("--max-tokens", "--stop", "--emulator", "--timeout", "PROMPT"):
        assert shown in done.stdout
    for hidden in ("--chat", "--out", "--new", "--no-history", "--format"):
        assert hidden not in done.stdout


def test_cache_replays_a_logged_reply_from_the_shell_too(env_emu, capsys):
    assert cli.main(["--cache", "--max-tokens", "30", "Tide", "pools"]) == 0
    first = capsys.readouterr()
    assert cli.main(["--cache", "--max-tokens", "30", "Tide", "pools"]) == 0
    again = capsys.readouterr()
    assert len([r for r in env_emu.requests if r.method == "POST"]) == 1
    assert again.out == first.out
    assert "replayed from the log" in again.err


def test_the_emulator_writes_nothing_to_the_log(sent, own_log, capsys):
    assert cli.main(["--emulator", "Hi"]) == 0
    assert not own_log.exists()


def test_a_model_that_makes_files_lists_them_and_saves_them(tmp_path):
    done = run("--emulator", "-m", "black-forest-labs/flux-schnell", "-i", "num_outputs=2",
               "--save", str(tmp_path), "a red fox")
    assert done.returncode == 0, done.stderr
    saved = sorted(tmp_path.iterdir())
    assert [p.name.split("-", 1)[1] for p in saved] == ["out-0.webp", "out-1.webp"]
    assert all(p.read_bytes()[8:12] == b"WEBP" for p in saved)
    lines = done.stdout.strip().splitlines()
    assert lines == [f"out-{i}.webp · {p.stat().st_size / 1000:.1f} kB · image/webp · saved to {p}"
                     for i, p in enumerate(saved)]
    assert "2 files" in done.stderr
