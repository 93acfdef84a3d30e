"""The notebook as context in an in-process IPython shell (terminal IPython's path): the
``post_run_cell`` hook that records failing cells, ``-f code`` pre-filling the next prompt,
and what the help and ``%config`` say. Real kernels are in test_kernel_errors.py."""

from __future__ import annotations

import logging

from replicate_magic.emulator import Faults


def magics_of(ip):
    return ip.magics_manager.registry["ReplicateMagics"]


def test_failing_cells_are_recorded_by_count_with_their_source(ip):
    errors = magics_of(ip).errors
    failed = ip.run_cell("def f():\n    return 1 / 0\nf()", store_history=True)
    error = errors.of_cell(failed.execution_count)
    assert error is not None and error.source == "def f():\n    return 1 / 0\nf()"
    assert error.name == "ZeroDivisionError" and error.message == "division by zero"
    assert f"Cell In[{failed.execution_count}], line 2, in f" in error.traceback
    assert "run_code" not in error.traceback  # IPython's own frame is left out, as IPython leaves it out

    syntax = ip.run_cell("x = (1,", store_history=True)
    text = errors.of_cell(syntax.execution_count).traceback
    assert f"Cell In[{syntax.execution_count}], line 1" in text and "SyntaxError" in text
    assert "compilerop" not in text and "run_cell" not in text  # only where the cell is wrong

    ok = ip.run_cell("y = 2", store_history=True)
    assert errors.of_cell(ok.execution_count) is None
    kept = len(errors)
    ip.run_cell("1 / 0", silent=True)  # a frontend's own request: no In[N], not kept
    assert len(errors) == kept


def test_only_the_last_fifty_are_kept(ip):
    errors = magics_of(ip).errors
    counts = [ip.run_cell(f"raise KeyError({n})", store_history=True).execution_count for n in range(55)]
    assert len(errors) == 50
    assert errors.of_cell(counts[4]) is None and errors.of_cell(counts[5]) is not None
    assert errors.latest().count == counts[-1]


def test_a_failure_of_the_hook_never_shows_under_a_cell(ip, monkeypatch, caplog, capsys):
    import replicate_magic.notebook_context as context

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(context, "record_error", broken)
    with caplog.at_level(logging.ERROR):
        ip.run_cell("1 / 0", store_history=True)
    shown = capsys.readouterr()
    assert "Error in callback" not in shown.out + shown.err and "boom" not in shown.out + shown.err
    assert any("could not record" in r.getMessage() for r in caplog.records)


def test_unloading_removes_the_hook(ip):
    magics = magics_of(ip)
    assert magics._remember_error in ip.events.callbacks["post_run_cell"]
    ip.extension_manager.unload_extension("replicate_magic")
    try:
        assert magics._remember_error not in ip.events.callbacks["post_run_cell"]
    finally:
        ip.extension_manager.load_extension("replicate_magic")


def test_f_code_in_a_terminal_prefills_the_next_prompt(ip, env_emu, capsys):
    env_emu.inject(Faults(tokens=["Try:\n\n```python\n", "total = sum(values)\n", "```\n"]))
    ip.run_cell_magic("replicate", "--no-history -f code", "Write code.")
    assert ip.rl_next_input == "total = sum(values)"
    printed = capsys.readouterr().out
    assert "```python" in printed  # the reply as usual
    assert printed.rstrip().endswith("the code is at the next prompt")


def test_code_is_a_cell_format_not_a_setting(ip, caplog):
    magics = magics_of(ip)
    ip.run_line_magic("config", "ReplicateMagics.output_format = 'code'")
    try:
        assert magics.output_format == "markdown"
        assert any("markdown or text" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    finally:
        ip.config.ReplicateMagics.pop("output_format", None)


def test_the_help_names_err_fix_and_f_code(ip):
    listing = repr(ip.run_line_magic("replicate", ""))
    assert "%replicate fix [N]" in listing
    help_text = ip.magics_manager.magics["cell"]["replicate"].__doc__
    assert "{Err}" in help_text and "%replicate fix [N]" in help_text
    assert "code: as Markdown, and its first fenced code block" in " ".join(help_text.split())


def test_each_templates_take_err_too(ip, env_emu):
    failed = ip.run_cell("{}['gone']", store_history=True)
    ip.user_ns["items"] = ["a", "b"]
    ip.run_cell_magic("replicate", "--each items", f"{{item}}: {{Err[{failed.execution_count}]}}")
    prompts = sorted(r.json["input"]["prompt"] for r in env_emu.requests if r.method == "POST")
    assert len(prompts) == 2 and all(p.endswith("KeyError: 'gone'") for p in prompts)
    assert prompts[0].startswith("a: Traceback (most recent call last):")
