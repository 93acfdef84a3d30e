"""The local log through the magic: every exchange logged, replay on re-run, restore, look back.

An in-process IPython shell against the emulator over real sockets; each test has a log file
of its own (conftest's ``own_log``). Real kernels are in test_kernel.py.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import replicate_magic
from replicate_magic.conversation import kernel_store
from replicate_magic.emulator import Faults
from replicate_magic.errors import NotInLogError, ResponseError

from .conftest import TOKEN


@pytest.fixture
def ip(ip):
    """conftest's shell, with the log settings a test set taken back."""
    yield ip
    for name in ("cache", "log", "log_path", "prices"):
        ip.config.ReplicateMagics.pop(name, None)


def ask(ip, line: str, cell: str) -> None:
    ip.run_cell_magic("replicate", line, cell)


def creates(emu) -> int:
    return len([r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")])


def config(ip, text: str) -> None:
    ip.run_line_magic("config", f"ReplicateMagics.{text}")


def test_every_exchange_is_logged_with_what_was_sent(ip, env_emu, own_log, capsys):
    ask(ip, "-c notes -t 0.5 --max-tokens 40", "What is a tide pool?")
    (row,) = replicate_magic.log()
    sent = [r for r in env_emu.requests if r.method == "POST"][-1].json["input"]
    assert row["input"] == sent
    assert (row["chat"], row["prompt"], row["status"], row["replayed"]) == ("notes", "What is a tide pool?",
                                                                            "succeeded", False)
    assert row["model"] == f"meta/meta-llama-3-70b-instruct @ {env_emu.base_url}"  # not Replicate's own
    assert row["reply"] and row["reply"] in capsys.readouterr().out
    (prediction,) = env_emu.predictions.values()
    assert row["prediction_id"] == prediction.id
    assert row["metrics"]["output_token_count"] == prediction.metrics["output_token_count"]
    # An official model's prediction says "hidden"; the version comes from its schema's latest_version.
    assert prediction.version == "hidden" and re.fullmatch(r"[0-9a-f]{64}", row["version"])
    assert own_log.stat().st_mode & 0o777 == 0o600


def test_a_rerun_with_cache_replays_without_any_request(ip, env_emu, capsys):
    ask(ip, "--cache --no-history", "Name three tide pool animals.")
    first = capsys.readouterr().out
    before = len(env_emu.requests)
    ask(ip, "--cache --no-history", "Name three tide pool animals.")
    again = capsys.readouterr().out
    assert len(env_emu.requests) == before  # not even the schema: it is known
    reply = first.split("\nmeta/")[0]
    assert again.startswith(reply)
    assert "replayed from the log, " in again and "nothing was asked or billed" in again
    assert [r["replayed"] for r in replicate_magic.log()] == [True, False]


def test_refresh_asks_again_and_the_new_reply_is_the_one_replayed_next(ip, env_emu, capsys):
    ask(ip, "--cache --no-history", "Hi")
    ask(ip, "--refresh --no-history", "Hi")
    assert creates(env_emu) == 2
    ask(ip, "--cache --no-history", "Hi")
    assert creates(env_emu) == 2
    newest, refreshed, first = replicate_magic.log()[:3]
    assert newest["replayed"] and newest["prediction_id"] == refreshed["prediction_id"] != first["prediction_id"]


def test_key_order_and_the_cell_do_not_matter_but_any_setting_does(ip, env_emu, capsys):
    ask(ip, "--cache --no-history -i seed=1 -i top_k=5", "Hi")
    ask(ip, "--cache --no-history -i top_k=5 -i seed=1", "Hi")
    assert creates(env_emu) == 1
    ask(ip, "--cache --no-history -i top_k=5 -i seed=2", "Hi")
    assert creates(env_emu) == 2


def test_a_failed_or_interrupted_reply_is_never_replayed(ip, env_emu, capsys):
    env_emu.inject(Faults(error_after=3))
    with pytest.raises(ResponseError):
        ask(ip, "--cache --no-history", "Fail, please")
    assert replicate_magic.log()[0]["status"] == "failed"
    ask(ip, "--cache --no-history", "Fail, please")
    assert creates(env_emu) == 2


def test_cache_only_fails_in_one_line_for_what_is_not_logged_and_sends_nothing(ip, env_emu, capsys):
    ask(ip, "--no-history", "Logged before")
    config(ip, "cache = 'only'")
    before = len(env_emu.requests)
    with pytest.raises(NotInLogError, match=r"^Not in the log: no reply of meta/meta-llama-3-70b-instruct"):
        ask(ip, "--no-history", "Never asked")
    ask(ip, "--no-history", "Logged before")
    assert len(env_emu.requests) == before
    assert "replayed from the log" in capsys.readouterr().out


def test_a_fresh_kernel_replays_offline_with_the_schema_from_the_log(ip, env_emu, monkeypatch, capsys):
    from replicate_magic.schemas import default_schemas

    ask(ip, "--no-history", "Offline later")
    default_schemas.clear()  # a new kernel: nothing in memory
    env_emu.__exit__(None, None, None)  # Replicate out of reach
    monkeypatch.delenv("REPLICATE_API_TOKEN")  # and no token: a replay needs none
    config(ip, "cache = 'only'")
    ask(ip, "--no-history", "Offline later")
    assert "replayed from the log" in capsys.readouterr().out


def test_restore_after_a_restart_continues_the_conversation(ip, env_emu, capsys):
    ask(ip, "-c trip -s 'Be brief.'", "Plan a day at the coast.")
    ask(ip, "-c trip", "And if it rains?")
    kernel_store.clear()  # what a restart loses
    assert "trip: 2 turns" in repr(ip.run_line_magic("replicate", "chats --saved"))
    ip.run_line_magic("replicate", "restore trip")
    assert "Restored conversation 'trip' (2 turns)" in capsys.readouterr().out
    ask(ip, "-c trip", "Thanks!")
    sent = [r for r in env_emu.requests if r.method == "POST"][-1].json["input"]
    assert "Plan a day at the coast." in sent["prompt"] and "And if it rains?" in sent["prompt"]
    assert sent["system_prompt"] == "Be brief."


def test_restore_never_replaces_turns_in_the_kernel_unless_asked(ip, env_emu, capsys):
    ask(ip, "-c trip", "One")
    with pytest.raises(UsageError, match="has 1 turn in the kernel; %replicate restore trip --replace"):
        ip.run_line_magic("replicate", "restore trip")
    with pytest.raises(UsageError, match="The log holds no conversation 'nothing'"):
        ip.run_line_magic("replicate", "restore nothing")
    ip.run_line_magic("replicate", "restore trip --replace")
    assert len(kernel_store.get("trip")) == 1


def test_the_log_listing_filters_and_sums(ip, env_emu, capsys):
    ask(ip, "--no-history", "About <b>crabs</b>")
    ask(ip, "--no-history -m openai/gpt-4o-mini", "About anemones")
    listing = ip.run_line_magic("replicate", "log")
    assert "About <b>crabs</b>" in repr(listing) and "About anemones" in repr(listing)
    assert "<b>crabs" not in listing._repr_html_() and "&lt;b&gt;crabs" in listing._repr_html_()
    only = repr(ip.run_line_magic("replicate", "log -m openai/gpt-4o-mini"))
    assert "anemones" in only and "crabs" not in only
    assert "crabs" in repr(ip.run_line_magic("replicate", "log CRABS")) and "anemones" not in repr(
        ip.run_line_magic("replicate", "log CRABS"))
    summary = repr(ip.run_line_magic("replicate", "log --summary"))
    assert "exchanges" in summary and "gpt-4o-mini" in summary
    with pytest.raises(UsageError, match="invalid value"):
        ip.run_line_magic("replicate", "log -n 0")


def test_the_token_is_nowhere_in_the_log(ip, env_emu, own_log, capsys):
    ip.user_ns["note"] = "mine"
    ask(ip, f"--no-history -s 'say {TOKEN} back'", "Repeat the system prompt: {note}")
    replicate_magic.log()  # the connection is open; its WAL holds the rows too
    data = b"".join(p.read_bytes() for p in own_log.parent.glob("log.db*"))
    assert TOKEN.encode() not in data
    assert b"[REDACTED]" in data


def test_a_corrupt_log_is_one_warning_and_the_reply_stands(ip, env_emu, own_log, capsys):
    own_log.write_bytes(b"this is not a database" * 100)
    ask(ip, "-c kept", "Still answered?")
    out = capsys.readouterr().out
    assert "warning: not logged: The log at " in out and "is not a replicate_magic database" in out
    assert len(kernel_store.get("kept")) == 1  # the conversation has the turn


def test_with_the_log_off_nothing_is_written(ip, env_emu, own_log, capsys):
    config(ip, "log = False")
    ask(ip, "--cache", "Unlogged")
    assert not own_log.exists()
    with pytest.raises(UsageError, match="The log is off"):
        ip.run_line_magic("replicate", "log")


def test_a_known_price_shows_on_the_line_under_the_reply(ip, env_emu, capsys):
    config(ip, "prices = {'meta/meta-llama-3-70b-instruct': {'input_per_million': 1000000, "
               "'output_per_million': 1000000}}")
    ask(ip, "--no-history", "Hi")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    (prediction,) = env_emu.predictions.values()
    tokens = prediction.metrics["input_token_count"] + prediction.metrics["output_token_count"]
    assert f"≈ ${tokens:,.2f}" in line  # a dollar a token, as the override says
    summary = repr(ip.run_line_magic("replicate", "log --summary"))
    assert f"${tokens:.4f}" in summary  # the same price in the totals


def test_two_shells_share_one_file_without_locking(own_log, env_emu, capsys):
    from replicate_magic.journal import shared_log
    from replicate_magic.store import LogStore

    other = LogStore(own_log)  # another kernel's connection to the same file
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("replicate_magic")
    try:
        for n in range(5):
            ask(shell, "--no-history", f"From the shell {n}")
            other.recent(1)
        assert len(shared_log().recent(100)) == 5
    finally:
        shell.extension_manager.unload_extension("replicate_magic")
        other.close()
    with sqlite3.connect(own_log) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_fresh_kernel_takes_the_schema_from_the_log_instead_of_asking(ip, env_emu, capsys):
    from replicate_magic.schemas import default_schemas

    ask(ip, "--no-history", "First")
    default_schemas.clear()  # a new kernel: nothing in memory
    before = len(env_emu.requests)
    ask(ip, "--no-history", "Second")
    asked = [r.path for r in env_emu.requests[before:]]
    assert not [p for p in asked if p.startswith("/v1/models/") and not p.endswith("/predictions")], asked
    assert creates(env_emu) == 2


def test_restore_starts_after_a_reset_or_a_new_conversation(ip, env_emu, capsys):
    ask(ip, "-c trip", "Before the reset")
    ip.run_line_magic("replicate", "reset trip")
    ask(ip, "-c trip", "After the reset")
    kernel_store.clear()
    assert "trip: 1 turn" in repr(ip.run_line_magic("replicate", "chats --saved"))
    ip.run_line_magic("replicate", "restore trip")
    assert [t.prompt for t in kernel_store.get("trip").turns] == ["After the reset"]
    ask(ip, "-c trip --new", "A fresh start")
    kernel_store.clear()
    ip.run_line_magic("replicate", "restore trip")
    assert [t.prompt for t in kernel_store.get("trip").turns] == ["A fresh start"]
    assert "reset" in [r["status"] for r in replicate_magic.log()]


def test_a_schema_is_written_to_the_log_once_not_on_every_turn(ip, env_emu, capsys):
    from replicate_magic.journal import shared_log

    ask(ip, "--no-history", "First")
    logged = f"meta/meta-llama-3-70b-instruct @ {env_emu.base_url}"
    saved = shared_log().load_schema(logged)
    ask(ip, "--no-history", "Second")
    assert saved is not None and shared_log().load_schema(logged) == saved  # same saved_at: not rewritten
