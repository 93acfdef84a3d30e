"""The notebook as context in real IPython kernels (ipykernel 7 and 6.29), against the emulator:
``{Err}`` and ``{Err[N]}`` in a prompt, ``%replicate fix [N]`` and ``-f code``.

What is asserted is what the emulator (Replicate) received and what a notebook gets: the
prompt carries the exception's type, message and traceback, without the ANSI colours the
notebook showed them in, and ``%replicate fix`` the failing cell's source too; a placeholder
or a fix without an error is one line and nothing is sent; ``-f code`` puts the reply's first
fenced code block, exactly, into the execute_reply's ``set_next_input`` payload (what
JupyterLab and Notebook 7 turn into a new cell below).
"""

from __future__ import annotations

import pytest

from replicate_magic.emulator import Faults

from . import test_kernel
from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import KernelSession, Request, plain
from .test_kernel import _history, _last_text, _one_line_error, _output, _use

# The fixtures of test_kernel (pytest finds them by name): one shared kernel per kernelspec,
# pointed at each test's emulator, and a fresh kernel where a test needs one; and the token and
# HTML checks after each test.
shared_kernel, kernel, fresh_kernel = test_kernel.shared_kernel, test_kernel.kernel, test_kernel.fresh_kernel


def _creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def _prompt(emu) -> str:
    return _creates(emu)[-1].json["input"]["prompt"]


def _failing(kernel: KernelSession, code: str) -> int:
    """Run a cell that must fail; its execution count (In[N])."""
    cell = kernel.run(code)
    assert cell.status == "error", cell.reply
    return cell.reply["execution_count"]


def _line(cell: Request) -> str:
    """The line under the reply: the cell's last output."""
    return plain(cell.outputs[-1])


def _usage_error(cell: Request) -> str:
    """The cell failed with a UsageError, which IPython shows as one line on stderr; the line."""
    assert cell.status == "error" and cell.reply["ename"] == "UsageError", cell.reply
    (line,) = cell.stderr.splitlines()
    assert line.startswith("UsageError: ") and not cell.of_type("error")
    return line


def _next_input(cell: Request) -> list[dict]:
    return [p for p in cell.reply.get("payload", []) if p.get("source") == "set_next_input"]


# -- {Err} and {Err[N]} -----------------------------------------------------------------------------


def test_err_sends_the_type_message_and_traceback_without_colours(kernel, emu):
    failed = kernel.run("def half(x):\n    return x / 0\nhalf(4)")
    n = failed.reply["execution_count"]
    (shown,) = failed.of_type("error")
    assert "\x1b[" in "".join(shown.content["traceback"])  # the notebook showed it in colour

    cell = kernel.ok("%%replicate --no-history\nExplain this error:\n\n{Err}")

    prompt = _prompt(emu)
    assert prompt.startswith("Explain this error:\n\nTraceback (most recent call last):\n")
    assert f"  Cell In[{n}], line 3, in <module>\n    half(4)\n" in prompt
    assert f"  Cell In[{n}], line 2, in half\n    return x / 0\n" in prompt
    assert prompt.endswith("ZeroDivisionError: division by zero")
    assert "\x1b" not in prompt
    assert "ipykernel_" not in prompt and "interactiveshell" not in prompt  # no temp file, no IPython frame
    assert "expanded: {Err}" in _line(cell)
    assert _last_text(cell) == _output(emu, list(emu.predictions)[-1])


def test_colours_in_the_message_itself_are_removed(kernel, emu):
    _failing(kernel, "raise ValueError(chr(27) + '[31mred' + chr(27) + '[0m alert' + chr(7))")
    kernel.ok("%%replicate --no-history\n{Err}")
    prompt = _prompt(emu)
    assert prompt.endswith("ValueError: red alert") and "\x1b" not in prompt and "\x07" not in prompt


def test_err_n_is_the_error_of_that_cell(kernel, emu):
    first = _failing(kernel, "{}['missing']")
    second = _failing(kernel, "int('x')")
    kernel.ok(f"%%replicate --no-history\nFirst {{Err[{first}]}}\n\nthen {{Err}}.")
    prompt = _prompt(emu)
    one, two = prompt.split("\n\nthen ")
    assert f"Cell In[{first}], line 1" in one and one.endswith("KeyError: 'missing'")
    assert f"Cell In[{second}], line 1" in two
    assert two.endswith("ValueError: invalid literal for int() with base 10: 'x'.")


def test_an_err_that_names_no_error_is_one_line_and_nothing_is_sent(kernel, emu):
    fine = kernel.ok("x = 1").reply["execution_count"]
    ran_ok = kernel.run(f"%%replicate --no-history\nExplain {{Err[{fine}]}}")
    shown = _one_line_error(ran_ok, "InvalidRequestError", lines=1)
    assert f"{{Err[{fine}]}}: cell In[{fine}] raised no error" in shown and "nothing was sent" in shown
    not_yet = kernel.run("%%replicate --no-history\nExplain {Err[99999]}")
    assert "cell In[99999] has not run yet" in _one_line_error(not_yet, "InvalidRequestError", lines=1)
    assert _creates(emu) == []

    # In code, a placeholder is text: sent as typed, nothing refused.
    kernel.ok("%%replicate --no-history\nKeep `{Err[99999]}` as typed.")
    assert _prompt(emu) == "Keep `{Err[99999]}` as typed."


def test_err_before_any_error_is_one_line_and_so_is_fix(fresh_kernel, emu):
    _use(fresh_kernel, emu).ok("%load_ext replicate_magic")
    cell = fresh_kernel.run("%%replicate\nExplain {Err}")
    assert "{Err}: no cell has failed yet" in _one_line_error(cell, "InvalidRequestError", lines=1)
    fix = fresh_kernel.run("%replicate fix")
    shown = _usage_error(fix)
    assert "Nothing to fix: no cell has failed except %replicate ones" in shown
    assert _creates(emu) == []


def test_an_error_shown_before_load_ext_is_err_too(fresh_kernel, emu):
    n = _failing(_use(fresh_kernel, emu), "import json\njson.loads('{oops')")
    fresh_kernel.ok("%load_ext replicate_magic")
    fresh_kernel.ok("%%replicate --no-history\n{Err}")
    prompt = _prompt(emu)
    assert f"Cell In[{n}], line 2, in <module>" in prompt
    assert "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes" in prompt


# -- %replicate fix ----------------------------------------------------------------------------------


SOURCE = "def mean(xs):\n    return sum(xs) / len(xs)\n\nmean([])"


def test_fix_sends_the_failing_cell_s_source_and_traceback_one_shot(kernel, emu):
    kernel.ok("%replicate reset")
    kernel.ok("%%replicate\nRemember the tides.")  # a conversation that fix must leave alone
    before = _history(kernel)
    n = _failing(kernel, SOURCE)

    cell = kernel.ok("%replicate fix")

    prompt = _prompt(emu)
    assert prompt.startswith(f"Cell In[{n}] of my Jupyter notebook failed with ZeroDivisionError.")
    assert f"```python\n{SOURCE}\n```" in prompt
    assert f"  Cell In[{n}], line 2, in mean\n    return sum(xs) / len(xs)\n" in prompt
    assert "ZeroDivisionError: division by zero\n```" in prompt and "\x1b" not in prompt
    assert "Remember the tides" not in prompt  # one-shot: the conversation is not sent...
    assert _history(kernel) == before  # ...nor changed
    assert _last_text(cell) == _output(emu, list(emu.predictions)[-1])  # streamed like a cell turn
    assert f"expanded: {{In[{n}]}}, {{Err[{n}]}}" in _line(cell)
    assert not cell.of_type("execute_result") and not _next_input(cell)


def test_fix_n_and_a_failed_fix_leave_the_user_s_error_the_subject(kernel, emu):
    first = _failing(kernel, "{}['missing']")
    second = _failing(kernel, "undefined_name + 1")
    wrong = kernel.run("%replicate fix 99999")
    assert "Nothing to fix in cell 99999: cell In[99999] has not run yet" in _usage_error(wrong)
    assert _creates(emu) == []

    kernel.ok("%replicate fix")  # the failed fix above is not "the most recent error"
    assert f"Cell In[{second}]" in _prompt(emu) and "NameError: name 'undefined_name' is not defined" in _prompt(emu)
    kernel.ok(f"%replicate fix {first} -m openai/gpt-4o-mini")
    (create,) = _creates(emu)[-1:]
    assert create.path == "/v1/models/openai/gpt-4o-mini/predictions"
    sent = create.json["input"]
    text = sent.get("prompt") or sent["messages"][-1]["content"]
    assert "```python\n{}['missing']\n```" in text and "KeyError: 'missing'" in text

    bad = kernel.run("%replicate fix seven")
    assert "Usage: %replicate fix [N]" in _usage_error(bad)


# -- -f code ------------------------------------------------------------------------------------------

TRICKY = ["Indented first:\n\n    not = 'this one'\n\n",
          "1. In a list, a tilde fence:\n\n   ~~~python\n   print('```')\n   if True:\n       pass\n   ~~~\n\n",
          "```python\nsecond = 'not this one'\n```\n"]


def test_f_code_puts_the_first_fenced_block_exactly_into_a_new_cell(kernel, emu):
    emu.inject(Faults(tokens=TRICKY))
    cell = kernel.ok("%%replicate --no-history -f code\nWrite code, please.")

    assert _next_input(cell) == [{"source": "set_next_input", "text": "print('```')\nif True:\n    pass",
                                  "replace": False}]
    assert "the code is in a new cell below" in _line(cell)
    assert _last_text(cell) == "".join(TRICKY)  # the reply still shows, whole
    area = [m for m in cell.of_type("update_display_data")][-1]
    assert "<pre" in area.content["data"]["text/html"]  # as Markdown


def test_f_code_without_a_fence_puts_the_whole_reply(kernel, emu):
    emu.inject(Faults(tokens=["\n", "Just ", "prose, no code.  ", "\n"]))
    cell = kernel.ok("%%replicate --no-history -f code\nAnything.")
    assert [p["text"] for p in _next_input(cell)] == ["Just prose, no code."]


def test_fix_f_code_puts_the_model_s_fix_into_a_new_cell(kernel, emu):
    _failing(kernel, SOURCE)
    cell = kernel.ok("%replicate fix -f code")
    (payload,) = _next_input(cell)
    reply = _output(emu, list(emu.predictions)[-1])
    assert payload["text"] and f"```python\n{payload['text']}\n```" in reply  # the emulator's block, exactly
    assert payload["replace"] is False
    assert "the code is in a new cell below" in _line(cell)


def test_without_f_code_no_cell_is_made(kernel, emu):
    cell = kernel.ok("%%replicate --no-history\nWrite code, please.")
    assert "```python" in _last_text(cell)  # the emulator answered with code...
    assert _next_input(cell) == []  # ...which stays in the reply


@pytest.mark.parametrize("line", ["-f code --each items", "-f code -m openai/gpt-4o-mini -m meta/meta-llama-3-8b-instruct"])
def test_f_code_takes_one_reply_only(kernel, emu, line):
    kernel.ok("items = [1, 2]")
    cell = kernel.run(f"%%replicate {line}\nWrite code about {{item}}.")
    assert "-f code puts one reply's code into a new cell" in _usage_error(cell)
    assert _creates(emu) == []

