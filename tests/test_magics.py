"""%%replicate in an in-process IPython shell against the emulator (the terminal path).

Real kernels, display updates and interrupts are in test_kernel.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic.conversation import kernel_store
from replicate_magic.emulator import Faults
from replicate_magic.errors import InvalidRequestError, MissingAuthError, ModelError, ResponseError

from .conftest import TOKEN


def ask(ip, line: str, cell: str):
    return ip.run_cell_magic("replicate", line, cell)


def last_input(emu) -> dict:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")][-1].json["input"]


def test_reply_streams_to_stdout_and_is_recorded(ip, env_emu, capsys):
    assert ask(ip, "", "Write a haiku about the sea.") is None  # no duplicate Out[]
    printed = capsys.readouterr().out
    (prediction,) = env_emu.predictions.values()
    assert "".join(prediction.output) in printed
    assert "tokens" in printed.splitlines()[-1]  # the metrics line
    assert replicate_magic.history() == [
        {"role": "user", "content": "Write a haiku about the sea."},
        {"role": "assistant", "content": "".join(prediction.output)},
    ]


def test_next_cell_continues_the_conversation(ip, env_emu, capsys):
    ask(ip, "", "First question")
    ask(ip, "", "Second question")
    assert "turn 2" in capsys.readouterr().out
    assert "User: First question" in last_input(env_emu)["prompt"]


def test_options_reach_the_model_in_its_own_keys(ip, env_emu):
    ask(ip, '-m mistralai/mixtral-8x7b-instruct-v0.1 -t 0.3 --top-p 0.5 --top-k 7 --max-tokens 9 -i seed=3 -s "be brief"', "Hi")
    sent = last_input(env_emu)
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["max_new_tokens"], sent["seed"]) == (0.3, 0.5, 7, 9, 3)
    assert sent["prompt"].startswith("System: be brief")


def test_out_stores_the_reply(ip, env_emu):
    ask(ip, "-o reply --no-history", "Hello")
    (prediction,) = env_emu.predictions.values()
    assert ip.user_ns["reply"] == "".join(prediction.output)
    assert replicate_magic.history() == []  # --no-history records nothing


def test_named_chat_and_new(ip, env_emu, capsys):
    ask(ip, "-c work", "One")
    ask(ip, "-c work --new", "Two")
    assert "turn 1. You said: “Two”" in capsys.readouterr().out
    assert [m["content"] for m in replicate_magic.history("work") if m["role"] == "user"] == ["Two"]


def test_variables_are_expanded_and_other_braces_kept(ip, env_emu):
    ip.user_ns["topic"] = "tide pools"
    ask(ip, "--no-history", 'About {topic}: parse {"a": 1} and {unknown}')
    assert last_input(env_emu)["prompt"] == 'About tide pools: parse {"a": 1} and {unknown}'


def test_defaults_come_from_config(ip, env_emu):
    ip.run_line_magic("config", 'ReplicateMagics.model = "openai/gpt-4o-mini"')
    ip.run_line_magic("config", 'ReplicateMagics.default_inputs = {"temperature": 0.1}')
    ask(ip, "--no-history", "Hi")
    assert last_input(env_emu)["messages"][-1] == {"role": "user", "content": "Hi"}
    assert last_input(env_emu)["temperature"] == 0.1
    ip.run_line_magic("config", 'ReplicateMagics.model = "meta/meta-llama-3-70b-instruct"')
    ip.run_line_magic("config", "ReplicateMagics.default_inputs = {}")


def test_the_cells_own_settings_beat_the_configured_inputs(ip, env_emu):
    ip.run_line_magic("config", "ReplicateMagics.default_inputs = {'temperature': 0.1, 'max_tokens': 7, 'seed': 3}")
    try:
        ask(ip, "--no-history -t 0.9 --max-tokens 3", "Hi")
        sent = last_input(env_emu)
        assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.9, 3, 3)
        ask(ip, "--no-history -i seed=5", "Hi")
        assert (last_input(env_emu)["seed"], last_input(env_emu)["temperature"]) == (5, 0.1)
    finally:
        ip.run_line_magic("config", "ReplicateMagics.default_inputs = {}")


@pytest.mark.parametrize("setting, value, allowed", [
    ("max_history", "-1", "a whole number >= 0"),
    ("timeout", "-5", "a number > 0"),
    ("connect_timeout", "0", "a number > 0"),
    ("output_format", "'html'", "markdown or text"),
])
def test_a_bad_config_value_is_refused_at_once_naming_the_setting(ip, env_emu, caplog, setting, value, allowed):
    magics = ip.magics_manager.registry["ReplicateMagics"]
    before = getattr(magics, setting)
    ip.run_line_magic("config", f"ReplicateMagics.{setting} = {value}")
    assert getattr(magics, setting) == before
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert setting in record.getMessage() and allowed in record.getMessage()
    ask(ip, "--no-history", "Hi")  # the magic still works with the setting as it was
    assert last_input(env_emu)["prompt"]
    # The shell's config keeps the bad value: loading the extension again says so in one line.
    ip.extension_manager.unload_extension("replicate_magic")
    with pytest.raises(UsageError, match=f"^ReplicateMagics.{setting}: invalid value .*allowed: .*load again$"):
        ip.extension_manager.load_extension("replicate_magic")
    del ip.config.ReplicateMagics[setting]
    ip.extension_manager.load_extension("replicate_magic")


@pytest.mark.parametrize(
    "line, message",
    [("-t hot", "-t/--temperature"), ("--top-p 2", "--top-p"), ("--bogus", "unrecognized"),
     ("hello there", "cell body"), ("-o 1x", "--out")],
)
def test_bad_options_are_one_line_usage_errors(ip, line, message):
    with pytest.raises(UsageError, match=message) as caught:
        ask(ip, line, "Hi")
    assert "\n" not in str(caught.value)


def test_empty_cell_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="empty"):
        ask(ip, "", "   \n")


def test_api_error_keeps_history_and_shows_no_token(ip, env_emu, capsys):
    ask(ip, "", "Keep me")
    before = replicate_magic.history()
    with pytest.raises(ResponseError, match="404") as caught:
        ask(ip, "-m nobody/nothing", "Lost?")
    assert replicate_magic.history() == before
    assert TOKEN not in str(caught.value) + capsys.readouterr().out


def test_error_event_keeps_the_partial_answer(ip, env_emu, capsys):
    env_emu.inject(Faults(error_after=4))
    with pytest.raises(ModelError, match="emulated"):
        ask(ip, "", "Go")
    (prediction,) = env_emu.predictions.values()
    printed = capsys.readouterr().out
    assert "".join(prediction.output[:4]) in printed and "stopped by the error" in printed
    assert replicate_magic.history() == []


def test_wrong_token_is_missing_auth_without_the_token(ip, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "wrong-token-abc")
    with pytest.raises(MissingAuthError, match="401") as caught:
        ask(ip, "", "Hi")
    assert "wrong-token-abc" not in str(caught.value)
    assert caught.value._render_traceback_() == [f"MissingAuthError: {caught.value}"]


def test_no_token_says_what_to_do(ip, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with pytest.raises(MissingAuthError, match="REPLICATE_API_TOKEN"):
        ask(ip, "", "Hi")


def test_token_is_not_a_setting(ip):
    traits = ip.magics_manager.registry["ReplicateMagics"].trait_names()
    assert not [t for t in traits if "token" in t or "key" in t]


# -- subcommands ---------------------------------------------------------------------------


def test_history_reset_and_chats(ip, env_emu, capsys):
    ask(ip, "", "Hello")
    assert "user: Hello" in repr(ip.run_line_magic("replicate", "history"))
    assert "<strong>user</strong>" in ip.run_line_magic("replicate", "history")._repr_html_()
    assert ip.run_line_magic("replicate", "chats") == "default: 1 turn"
    ip.run_line_magic("replicate", "reset")
    assert replicate_magic.history() == []
    assert "empty" in repr(ip.run_line_magic("replicate", "history other"))


def test_export_and_load(ip, env_emu, tmp_path):
    ask(ip, "", "Remember this")
    path = tmp_path / "chat.json"
    ip.run_line_magic("replicate", f"export {path}")
    saved = replicate_magic.history()
    assert json.loads(path.read_text())["turns"][0]["prompt"] == "Remember this"
    ip.run_line_magic("replicate", "reset")
    ip.run_line_magic("replicate", f"load {path} restored")
    assert replicate_magic.history("restored") == saved


@pytest.mark.parametrize("line, message", [("nonsense", "Unknown %replicate subcommand"),
                                           ("load /no/such/file.json", "Could not load"),
                                           ("export /tmp/x.json nobody", "no conversation"),
                                           ("history a b", "Too many")])
def test_subcommand_mistakes_are_usage_errors(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("replicate", line)


def test_models_lists_the_default_and_aliases(ip):
    listing = repr(ip.run_line_magic("replicate", "models"))
    assert "meta/meta-llama-3-70b-instruct  (also:" in listing


def test_help_shows_every_option(ip):
    doc = ip.magics_manager.magics["cell"]["replicate"].__doc__
    for flag in ("--model", "--temperature", "--top-p", "--top-k", "--max-tokens", "--stop", "--system", "--input",
                 "--chat", "--new", "--no-history", "--out", "--format", "--timeout"):
        assert flag in doc


def test_load_ext_imports_nothing_heavy():
    code = ("import sys; from IPython.core.interactiveshell import InteractiveShell; "
            "ip = InteractiveShell.instance(); ip.extension_manager.load_extension('replicate_magic'); "
            "print(sorted(m for m in ('aiohttp', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the command line ----------------------------------------------------------------------------


def test_cli_streams_a_reply(env_emu):
    result = subprocess.run([sys.executable, "-m", "replicate_magic", "--max-tokens", "12", "Hello", "there"],
                            capture_output=True, text=True, timeout=60)
    (prediction,) = env_emu.predictions.values()
    assert result.returncode == 0 and result.stdout.strip() == "".join(prediction.output).strip()
    assert "12 tokens" in result.stderr


def test_cli_errors_are_one_line(env_emu):
    bad = subprocess.run([sys.executable, "-m", "replicate_magic", "-t", "hot", "Hi"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--temperature" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "replicate_magic", "-m", "nobody/nothing", "Hi"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "404" in missing.stderr and TOKEN not in missing.stderr


def test_history_and_chats_as_text_carry_no_control_sequences(ip, env_emu):
    from replicate_magic.subcommands import _Text, _Transcript

    assert repr(_Transcript("x", [{"role": "assistant", "content": "a\x1b[2Jb\x1b]52;c;ZXZpbA==\x07"}])) == "assistant: ab"
    assert repr(_Text("chat\x1b]0;title\x07: 1 turn")) == "chat: 1 turn"


def test_export_never_replaces_a_file_unless_forced_and_writes_atomically(ip, env_emu, tmp_path):
    ask(ip, "", "Keep me")
    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text("my notebook")
    link = tmp_path / "link.json"
    link.symlink_to(notebook)
    for target in (notebook, link):
        with pytest.raises(UsageError, match=r"exists .*--force"):
            ip.run_line_magic("replicate", f"export {target}")
    assert notebook.read_text() == "my notebook" and link.is_symlink()
    ip.run_line_magic("replicate", f"export {link} --force")
    assert notebook.read_text() == "my notebook"  # the link itself was replaced, not written through
    assert not link.is_symlink() and json.loads(link.read_text())["turns"][0]["prompt"] == "Keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.ipynb", "link.json"]  # no temporary left


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"turns": 5}', "not a conversation"),
    (b'{"turns": [{"prompt": 1}]}', "not a conversation"),
])
def test_load_turns_every_bad_file_into_one_line(ip, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("replicate", f"load {path}")


def test_load_reads_a_bounded_amount(ip, monkeypatch):
    from replicate_magic import conversation

    monkeypatch.setattr(conversation, "MAX_LOAD_BYTES", 1_000_000)
    with pytest.raises(UsageError, match="larger than 1 MB"):
        ip.run_line_magic("replicate", "load /dev/zero")


@pytest.mark.parametrize("name", ["get_ipython", "print", "In", "Out", "_", "__", "_i", "_3", "_i3", "exit", "len"])
def test_out_refuses_names_python_or_ipython_use(ip, name):
    with pytest.raises(UsageError, match="already uses"):
        ask(ip, f"-o {name}", "Hi")
    assert ip.user_ns.get("get_ipython") is not None


def test_unload_removes_the_magics_and_the_hook(ip, env_emu):
    ip.extension_manager.unload_extension("replicate_magic")
    assert "replicate" not in ip.magics_manager.magics["cell"]
    assert "replicate" not in ip.magics_manager.magics["line"]
    assert not [c for c in ip.events.callbacks["pre_run_cell"] if "ReplicateMagics" in repr(c)]
    ip.extension_manager.load_extension("replicate_magic")  # and back, for the fixture's teardown
    ask(ip, "", "Hello again")
    assert len(replicate_magic.history()) == 2


def test_load_never_replaces_a_conversation_with_turns_unless_asked(ip, env_emu, tmp_path):
    ask(ip, "", "Keep me")
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]))
    for content in (plain.read_text(), "[]", json.dumps({"name": "", "turns": []})):
        plain.write_text(content)
        with pytest.raises(UsageError, match=r"already has 1 turn.*--replace"):
            ip.run_line_magic("replicate", f"load {plain}")
        assert replicate_magic.history()[0]["content"] == "Keep me"
    ip.run_line_magic("replicate", f"load {plain} --replace")
    assert replicate_magic.history() == []


def test_load_checks_names_as_chat_does(ip, tmp_path):
    path = tmp_path / "named.json"
    path.write_text(json.dumps({"name": "has space", "turns": []}))
    with pytest.raises(UsageError, match="not allowed"):
        ip.run_line_magic("replicate", f"load {path}")
    with pytest.raises(UsageError, match="not allowed"):
        ip.run_line_magic("replicate", f"load {path} '<b>x</b>'")


def test_export_and_load_expand_home_and_variables(ip, env_emu, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ask(ip, "", "Where am I?")
    ip.user_ns["folder"] = str(tmp_path)
    ip.run_line_magic("replicate", "export ~/home.json")
    ip.run_line_magic("replicate", "export $folder/dollar.json")
    ip.run_line_magic("replicate", "export {folder}/braces.json")
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["braces.json", "dollar.json", "home.json"]
    ip.run_line_magic("replicate", "load {folder}/braces.json copy")
    assert replicate_magic.history("copy") == replicate_magic.history()


@pytest.mark.parametrize("line, message", [("-h", r"%%replicate\?"), ("--help", r"%%replicate\?"),
                                           ("--temp 0.3", "unrecognized"), ("--max 5", "unrecognized")])
def test_help_flags_point_to_the_help_and_abbreviations_are_refused(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ask(ip, line, "Hi")


def test_an_empty_reply_says_so_and_one_token_is_singular(ip, env_emu, capsys):
    env_emu.inject(Faults(tokens=[]))
    ask(ip, "", "Say nothing.")
    assert "[empty reply: the model sent no text]" in capsys.readouterr().out
    env_emu.inject(Faults(tokens=["Yes"]))
    ask(ip, "", "One word.")
    assert "· 1 token ·" in capsys.readouterr().out


def test_a_prompt_that_expands_to_nothing_says_so(ip):
    ip.user_ns["blank"] = "   "
    with pytest.raises(UsageError, match=r"empty once \{blank\} expanded"):
        ask(ip, "", "{blank}")


def test_temperature_zero_is_raised_to_the_models_minimum_and_said(ip, env_emu, capsys):
    ask(ip, "-m meta/llama-2-70b-chat -t 0 --no-history", "Be exact.")
    assert last_input(env_emu)["temperature"] == 0.01
    assert "temperature 0 raised to 0.01, the lowest this model takes" in capsys.readouterr().out


def test_a_setting_outside_the_models_range_fails_before_anything_is_sent(ip, env_emu):
    with pytest.raises(InvalidRequestError, match=r"temperature=7.0 is outside what this model takes \(0.01 to 5\)"):
        ask(ip, "-m meta/llama-2-70b-chat -t 7 --no-history", "Be wild.")
    assert not [r for r in env_emu.requests if r.method == "POST"]
    assert replicate_magic.history() == []


def test_an_input_the_request_builds_is_refused_with_where_to_set_it(ip):
    with pytest.raises(UsageError, match="prompt is built from the prompt you write"):
        ask(ip, "-i prompt=Other", "Hi")
    with pytest.raises(UsageError, match="system_prompt is built from -s/--system"):
        ask(ip, "-i system_prompt=terse", "Hi")


def test_history_shows_the_last_turns_of_a_long_conversation_and_says_so(ip, env_emu):
    from replicate_magic.conversation import Turn

    conversation = kernel_store.get("long")
    for n in range(30):
        conversation.record(Turn(f"question {n}", "x" * 30_000 if n == 29 else f"answer {n}", "m"))
    shown = repr(ip.run_line_magic("replicate", "history long"))
    assert shown.startswith("The last 20 of 30 turns; %replicate history long -n 0 shows all")
    assert "question 10" in shown and "question 9\n" not in shown
    assert "[… 10,000 more characters not shown]" in shown
    everything = repr(ip.run_line_magic("replicate", "history long -n 0"))
    assert "question 0" in everything and not everything.startswith("The last")
    assert repr(ip.run_line_magic("replicate", "history -n 2 long")).count("user: question") == 2
    with pytest.raises(UsageError, match="0 shows all"):
        ip.run_line_magic("replicate", "history long -n many")


def test_an_unforeseen_failure_ends_the_turn_in_one_line_and_keeps_the_conversation(ip, env_emu, monkeypatch,
                                                                                    capsys):
    from replicate_magic.chat import ChatSession
    from replicate_magic.errors import UnexpectedError

    ask(ip, "", "First")
    original = ChatSession.ask

    async def broken(self, request, on_token, on_log=None, on_retry=None):
        on_token("Half an ans")
        raise TypeError("a bug")  # stands for any exception the code did not foresee

    monkeypatch.setattr(ChatSession, "ask", broken)
    with pytest.raises(UnexpectedError, match=r"^Unexpected TypeError: a bug\. The conversation is unchanged"):
        ask(ip, "", "Second")
    assert "Half an ans\n\n[stopped by the error below; this turn is not in the history]" in capsys.readouterr().out
    monkeypatch.setattr(ChatSession, "ask", original)
    assert [m["content"] for m in replicate_magic.history() if m["role"] == "user"] == ["First"]


def test_a_terminal_shows_the_cold_start_on_standard_error(ip, env_emu, capsys):
    env_emu.inject(Faults(logs=["Shard 3 of 8"], cold_start=1.2, tokens=["Warm", " now"]))
    ask(ip, "", "Hi")
    captured = capsys.readouterr()
    assert captured.out.startswith("Warm now")  # the reply alone on standard output
    assert "[asking meta/meta-llama-3-70b-instruct…]\n" in captured.err
    assert "[Shard 3 of 8]\n" in captured.err


def test_an_interrupt_before_anything_was_sent_is_one_line(ip, env_emu, monkeypatch):
    from replicate_magic import magics
    from replicate_magic.errors import ReplyInterrupted

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C landed while the prompt was being expanded

    monkeypatch.setattr(magics, "expand", interrupted)
    with pytest.raises(ReplyInterrupted, match=r"^Interrupted before anything was sent; nothing was asked.$"):
        ask(ip, "", "Hi {x}")
    assert not [r for r in env_emu.requests if r.method == "POST"]
