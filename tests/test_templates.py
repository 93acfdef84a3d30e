"""Saved prompt templates (issue 13, item 5): ``%replicate template NAME`` saves the last
``%%replicate`` cell, ``%%replicate -T NAME`` runs it with the cell's text as ``{input}``.

The store's table and its migration, the merging of a template's line with a cell's, the
magic in-process against the emulator (what the emulator received), and one real kernel that
is restarted between saving a template and running it.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from IPython.core.error import UsageError

from replicate_magic.options import line_over, parse_cell_options
from replicate_magic.store import SCHEMA_VERSION, LogStore, StoreError

from .conftest import TOKEN
from .kernel_harness import KernelSession, kernel_env, plain

# -- the store --------------------------------------------------------------------------------------


def test_templates_round_trip_in_the_store(tmp_path):
    with LogStore(tmp_path / "log.db") as log:
        assert log.templates() == [] and log.template("summ") is None
        log.save_template("summ", "-t 0.2", "Summarize: {input}")
        log.save_template("alpha", "", "Say hi")
        assert [t["name"] for t in log.templates()] == ["alpha", "summ"]
        saved = log.template("summ")
        assert (saved["line"], saved["prompt"]) == ("-t 0.2", "Summarize: {input}")
        assert saved["saved_at"].endswith("+00:00")
        log.save_template("summ", "-t 0.9", "Shorter: {input}")  # replaces
        assert log.template("summ")["line"] == "-t 0.9" and len(log.templates()) == 2
        assert log.delete_template("summ") is True and log.delete_template("summ") is False
        assert log.template("summ") is None
    with LogStore(tmp_path / "log.db") as again:  # another process, later
        assert [t["name"] for t in again.templates()] == ["alpha"]


def test_the_token_never_reaches_the_templates_table(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    path = tmp_path / "log.db"
    with LogStore(path) as log:
        log.save_template("t", f"-i key={TOKEN}", f"use {TOKEN}")
        assert (log.template("t")["line"], log.template("t")["prompt"]) == ("-i key=[REDACTED]", "use [REDACTED]")
    assert not [f for f in tmp_path.iterdir() if TOKEN.encode() in f.read_bytes()]


LAYOUT_3 = """
    CREATE TABLE exchanges (id INTEGER PRIMARY KEY, time TEXT NOT NULL, chat TEXT NOT NULL,
        prompt TEXT NOT NULL, system TEXT, model TEXT NOT NULL, version TEXT, input TEXT NOT NULL,
        input_hash TEXT NOT NULL, reply TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
        prediction_id TEXT, status TEXT NOT NULL, cell_id TEXT, notebook TEXT,
        replayed INTEGER NOT NULL DEFAULT 0, files TEXT NOT NULL DEFAULT '[]');
    CREATE INDEX exchanges_replay ON exchanges (model, input_hash, time);
    CREATE INDEX exchanges_time ON exchanges (time);
    CREATE INDEX exchanges_chat ON exchanges (chat, time);
    CREATE INDEX exchanges_model ON exchanges (model, time);
    CREATE TABLE schemas (model TEXT PRIMARY KEY, version TEXT, schema TEXT NOT NULL, saved_at TEXT NOT NULL);
    INSERT INTO exchanges (time, chat, prompt, model, input, input_hash, reply, status)
        VALUES ('2025-05-05T00:00:00.000000+00:00', 'old', 'kept?', 'm/m', '{}', 'x', 'yes', 'succeeded');
    PRAGMA application_id = 1380797511;
    PRAGMA user_version = 3;
"""


def test_a_log_of_the_third_layout_gains_the_templates_table_and_keeps_its_rows(tmp_path):
    path = tmp_path / "log.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # layout 3 (no text index: a SQLite without trigrams)
        db.executescript(LAYOUT_3)
    with LogStore(path) as log:
        [old] = log.conversation("old")
        assert (old.prompt, old.reply) == ("kept?", "yes")
        log.save_template("t", "", "Hello {input}")
        assert log.template("t")["prompt"] == "Hello {input}"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert db.execute("SELECT name, line, prompt FROM templates").fetchall() == [("t", "", "Hello {input}")]


def test_a_log_that_cannot_be_written_is_one_store_error(tmp_path):
    path = tmp_path / "log.db"
    path.write_text("not a database at all, just text " * 100)
    with pytest.raises(StoreError) as caught, LogStore(path) as log:
        log.templates()
    assert "\n" not in str(caught.value) and "is not a replicate_magic database" in str(caught.value)


# -- a template's line under a cell's -----------------------------------------------------------------


@pytest.mark.parametrize(("base", "line", "merged"), [
    ("-m a/b -t 0.2", "", "--model=a/b --temperature=0.2"),
    ("-m a/b -t 0.2", "-t 0.7 -T summ", "--model=a/b --temperature=0.7"),
    ("-m a/b", "-m c/d", "--model=c/d"),  # the cell's model, not both side by side
    ("-t 0", "", "--temperature=0.0"),  # a zero is given, not absent
    ("-i seed=3 -i top=1", "-i seed=4 -i x=y", "--input=seed=4 --input=top=1 --input=x=y"),
    ("--context a --context b", "--context b --context c", "--context=a --context=b --context=c"),
    ("--stop A --stop B", "--stop C", "--stop=C"),
    ("--no-history", "--new", "--new --no-history"),
    ('-s "-be brief, please"', "", "'--system=-be brief, please'"),
])
def test_the_cells_flags_win_over_the_templates(base, line, merged):
    assert line_over(base, line) == merged
    parse_cell_options(merged)  # and it reads back


def test_a_bad_line_in_either_is_its_own_one_line_error():
    with pytest.raises(UsageError, match="argument -t/--temperature"):
        line_over("-t hot", "")
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        line_over("", "--bogus")


# -- the magic -------------------------------------------------------------------------------------


@pytest.fixture
def ip(ip):
    """conftest's shell, with the settings a test set taken back."""
    yield ip
    for name in ("log", "context_budget"):
        ip.config.ReplicateMagics.pop(name, None)


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def sent(emu) -> dict:
    return creates(emu)[-1].json["input"]


def cell(ip, line: str, text: str):
    return ip.run_cell_magic("replicate", line, text)


def line(ip, text: str):
    return ip.run_line_magic("replicate", text)


def test_save_list_show_run_and_delete(ip, env_emu, capsys):
    cell(ip, "--no-history -t 0.2 --max-tokens 40", "Summarize in one line:\n\n{input}")
    assert sent(env_emu)["prompt"] == "Summarize in one line:\n\n{input}"  # undefined here: as typed
    line(ip, "template summ")
    out = capsys.readouterr().out
    assert "Saved template 'summ' (--no-history -t 0.2 --max-tokens 40 · 3 lines with {input}" in out
    assert "Run it with %%replicate -T summ; its {input} is the cell's text." in out

    listing = repr(line(ip, "template"))
    assert "summ" in listing and "--no-history -t 0.2 --max-tokens 40" in listing and "Summarize" in listing
    shown = line(ip, "template summ --show")
    assert shown == "%%replicate --no-history -t 0.2 --max-tokens 40\nSummarize in one line:\n\n{input}"

    cell(ip, "-T summ", "The tide came in at noon and went out at six.")
    prompt_sent = sent(env_emu)
    assert prompt_sent["prompt"] == "Summarize in one line:\n\nThe tide came in at noon and went out at six."
    assert (prompt_sent["temperature"], prompt_sent["max_tokens"]) == (0.2, 40)  # the template's flags
    assert "template: summ" in capsys.readouterr().out

    line(ip, "template summ --delete")
    assert "Deleted template 'summ'." in capsys.readouterr().out
    before = len(creates(env_emu))
    with pytest.raises(UsageError, match=r"^There is no template 'summ' in .*log\.db; %replicate template lists them"):
        cell(ip, "-T summ", "Anything")
    assert len(creates(env_emu)) == before  # nothing was sent
    assert repr(line(ip, "template")).startswith("No templates yet")


def test_the_cells_own_flags_win_and_its_variables_are_expanded(ip, env_emu):
    cell(ip, "--no-history -t 0.2 -i seed=1", "Translate to French: {input}")
    line(ip, "template fr")
    ip.user_ns["phrase"] = "the sea is calm"
    cell(ip, "-T fr -t 0.9 -i seed=7", "{phrase}, {{phrase}}")
    got = sent(env_emu)
    assert got["prompt"] == "Translate to French: the sea is calm, {phrase}"
    assert (got["temperature"], got["seed"]) == (0.9, 7)


def test_input_in_code_stays_as_typed_and_a_template_without_input_takes_the_cell_after_it(ip, env_emu):
    cell(ip, "--no-history", "Explain `{input}` in Python, then:\n\n```\nprint({input})\n```\n{input}")
    line(ip, "template explain")
    cell(ip, "-T explain", "zip")
    assert sent(env_emu)["prompt"] == "Explain `{input}` in Python, then:\n\n```\nprint({input})\n```\nzip"

    cell(ip, "--no-history", "Be terse.")
    line(ip, "template terse")
    cell(ip, "-T terse", "Why is the sky blue?")
    assert sent(env_emu)["prompt"] == "Be terse.\n\nWhy is the sky blue?"
    line(ip, "-T terse")  # no {input}: the template alone is a prompt, run as a line magic
    assert sent(env_emu)["prompt"] == "Be terse."


def test_the_input_is_never_cut_to_the_context_budget(ip, env_emu):
    ip.run_line_magic("config", "ReplicateMagics.context_budget = 50")
    cell(ip, "--no-history", "Proofread: {input}")
    line(ip, "template proof")
    text = "A sentence to proofread. " * 200
    cell(ip, "-T proof", text)
    assert sent(env_emu)["prompt"] == "Proofread: " + text.strip()


def test_an_empty_cell_for_a_template_with_input_is_one_line(ip, env_emu):
    cell(ip, "--no-history", "Summarize: {input}")
    line(ip, "template summ")
    before = len(creates(env_emu))
    message = r"^Template 'summ' takes the cell's text as \{input\}: write it below %%replicate -T summ\.$"
    with pytest.raises(UsageError, match=message):
        cell(ip, "-T summ", "  \n")
    with pytest.raises(UsageError, match=message):
        line(ip, "-T summ")
    assert len(creates(env_emu)) == before


def test_a_template_run_can_be_saved_as_a_new_template(ip, env_emu, capsys):
    cell(ip, "--no-history -t 0.2", "Summarize: {input}")
    line(ip, "template summ")
    cell(ip, "-T summ --max-tokens 5", "one two three")
    line(ip, "template summ-short")
    assert line(ip, "template summ-short --show") == (
        "%%replicate --temperature=0.2 --max-tokens=5 --no-history\nSummarize: {input}")
    cell(ip, "-T summ-short", "four five")
    got = sent(env_emu)
    assert (got["prompt"], got["temperature"], got["max_tokens"]) == ("Summarize: four five", 0.2, 5)


def test_saving_needs_a_cell_and_never_overwrites_unasked(ip, env_emu, capsys):
    with pytest.raises(UsageError, match=r"^No %%replicate cell has run in this kernel yet: run one, then "
                                         r"%replicate template t saves its line and prompt\.$"):
        line(ip, "template t")
    cell(ip, "--no-history", "First: {input}")
    line(ip, "template t")
    cell(ip, "--no-history", "Second: {input}")
    with pytest.raises(UsageError, match=r"^Template 't' exists \(saved .* UTC\); %replicate template t --replace"):
        line(ip, "template t")
    line(ip, "template t --replace")
    assert line(ip, "template t --show").endswith("Second: {input}")


@pytest.mark.parametrize(("args", "message"), [
    ("template a b", r"^Usage: %replicate template \[NAME\]"),
    ("template a --bogus", r"\(unknown: --bogus\)$"),
    ("template --delete", r"^Usage: %replicate template"),
    ("template a --show --delete", r"^Usage: %replicate template"),
    ("template 'a b'", r"^Invalid template name 'a b' \(allowed: letters, digits"),
    ("template nothing --show", r"^There is no template 'nothing'"),
    ("template nothing --delete", r"^There is no template 'nothing'"),
])
def test_bad_template_commands_are_one_line(ip, env_emu, args, message):
    with pytest.raises(UsageError, match=message) as caught:
        line(ip, args)
    assert "\n" not in str(caught.value)


def test_a_bad_template_name_on_the_cell_line_is_one_line(ip, env_emu):
    with pytest.raises(UsageError, match=r"^argument -T/--template: invalid value 'a b'"):
        cell(ip, "-T 'a b'", "Hi")
    assert creates(env_emu) == []


def test_a_cell_holding_the_token_is_not_saved(ip, env_emu):
    cell(ip, "--no-history", f"Here is my key {TOKEN}")
    with pytest.raises(UsageError, match=r"^The last cell holds the API token, which is never stored: not saved\.$"):
        line(ip, "template leak")
    assert repr(line(ip, "template")).startswith("No templates yet")


def test_templates_are_kept_with_the_log_off_too(ip, env_emu, own_log):
    ip.run_line_magic("config", "ReplicateMagics.log = False")
    cell(ip, "--no-history", "Hello {input}")
    line(ip, "template hello")
    with contextlib.closing(sqlite3.connect(own_log)) as db:
        assert db.execute("SELECT name FROM templates").fetchall() == [("hello",)]
        assert db.execute("SELECT COUNT(*) FROM exchanges").fetchone() == (0,)  # no exchange was logged


def test_a_template_drives_a_batch(ip, env_emu):
    from replicate_magic.errors import InvalidRequestError

    ip.user_ns["reviews"] = ["good", "bad"]
    with pytest.raises(InvalidRequestError, match="has no field 'input'"):  # no {input} outside a template
        cell(ip, "--each reviews --max-tokens 3", "Label {item} as {input}")
    creates_before = len(creates(env_emu))
    line(ip, "template label")  # the last cell run, although it failed
    cell(ip, "-T label", "positive or negative")
    prompts = sorted(r.json["input"]["prompt"] for r in creates(env_emu)[creates_before:])
    assert prompts == ["Label bad as positive or negative", "Label good as positive or negative"]


def test_templates_survive_a_new_store_connection(ip, env_emu, own_log):
    """In-process stand-in for a restart (the real one is below): a fresh connection to the file."""
    from replicate_magic import journal

    cell(ip, "--no-history", "Hello {input}")
    line(ip, "template hello")
    for store in journal._open_logs.values():
        store.close()
    journal._open_logs.clear()
    ip.extension_manager.reload_extension("replicate_magic")
    cell(ip, "-T hello", "world")
    assert sent(env_emu)["prompt"] == "Hello world"


# -- a real kernel, restarted ----------------------------------------------------------------------------


def test_a_template_survives_a_kernel_restart(tmp_path_factory, kernel_name, emu, own_log):
    ipython_dir = tmp_path_factory.mktemp("ipython")
    env = kernel_env(ipython_dir, REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url,
                     REPLICATE_MAGIC_DB=str(own_log))
    with KernelSession(env, cwd=str(ipython_dir), kernel_name=kernel_name) as kernel:
        kernel.ok("%load_ext replicate_magic")
        kernel.ok("%%replicate --no-history -t 0.3\nRewrite as a haiku:\n\n{input}", cell_id="a")
        saved = kernel.ok("%replicate template haiku")
        assert "Saved template 'haiku'" in saved.stdout
        kernel.restart()
        assert kernel.eval("'replicate_magic' in __import__('sys').modules") is False  # it remembers nothing
        kernel.ok("%load_ext replicate_magic")
        listing = kernel.ok("%replicate template")
        assert "haiku" in plain(listing.of_type("execute_result")[0])
        before = len(creates(emu))
        kernel.ok("%%replicate -T haiku\nThe train was late again this morning.", cell_id="b")
        (create,) = creates(emu)[before:]
        assert create.json["input"]["prompt"] == "Rewrite as a haiku:\n\nThe train was late again this morning."
        assert create.json["input"]["temperature"] == 0.3
        failed = kernel.run("%%replicate -T nothing\nHi")
        assert failed.status == "error" and failed.reply["ename"] == "UsageError"
        assert failed.reply["evalue"].startswith("There is no template 'nothing'")
        assert len(creates(emu)) == before + 1
        assert TOKEN not in kernel.iopub_text()
