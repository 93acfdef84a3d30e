"""The notebook as context: each failing cell recorded for ``{Err}``, ``%replicate fix``, and a
reply's code put into a new cell (``-f code``). IPython glue.

``record_error`` is what the magic's ``post_run_cell`` hook does with a failing cell: the
traceback formatted by Python's ``traceback`` (IPython's own coloured one is for eyes, and
its frames are IPython's), IPython's ``run_code`` frame left out as IPython leaves it out, the
cell's file named as IPython names it, then kept as text by ``errors_context`` (pure).
``code_into_new_cell`` uses IPython's ``set_next_input``: in JupyterLab and Notebook 7 (a
``set_next_input`` payload with ``replace=False``) a new cell below the one that ran; in
terminal IPython the next prompt, pre-filled.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from IPython.core import interactiveshell
from IPython.core.error import UsageError

from .errors import ReplicateMagicError
from .errors_context import CellError, CellErrors, cell_error, fix_prompt
from .options import flag_parser, options_from
from .prompt_template import Expansion
from .reply_code import code_of

if TYPE_CHECKING:
    from .magics import ReplicateMagics

log = logging.getLogger(__name__)

_IPYTHON_RUNNER = interactiveshell.__file__  # run_code's frame: IPython's, not the user's
_CELL_NUMBER = re.compile(r"In\[(\d+)\]")
# What %replicate fix takes of the cell flags (one model; the conversation is not used).
_FIX_FLAGS = ("models", "temperature", "top_p", "top_k", "max_tokens", "out", "format", "timeout", "cache", "refresh")
FIX_USAGE = "fix [N] [-m MODEL] [-f markdown|text|code] [-t T] [--max-tokens N] [-o NAME] [--timeout S]"


def record_error(errors: CellErrors, result: Any, shell: Any) -> None:
    """Record the failing cell of ``result`` (IPython's ExecutionResult); cells not kept in
    the history (silent ones, a frontend's own requests) are left out: they have no In[N]."""
    error = result.error_before_exec or result.error_in_exec
    info = result.info
    if error is None or result.execution_count is None or not getattr(info, "store_history", False):
        return
    source = getattr(info, "raw_cell", "") or ""
    # A SyntaxError (before exec) has IPython's compiler frames only: its location says where.
    frames = None if result.error_before_exec is not None else _user_frames(error.__traceback__)
    errors.record(_as_cell_error(error, frames, result.execution_count, source, shell))


def record_last_shown(errors: CellErrors, shell: Any) -> None:
    """At ``%load_ext``: the error IPython showed last (``sys.last_value``), when it came
    from a cell, so ``{Err}`` and ``%replicate fix`` work on an error made before loading."""
    error = getattr(sys, "last_value", None)
    if not isinstance(error, BaseException):
        return
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(error.__traceback__)]
    if isinstance(error, SyntaxError) and error.filename:
        files.append(error.filename)
    numbers = [int(m[1]) for f in files if (m := _CELL_NUMBER.fullmatch(_cell_label(shell, f) or ""))]
    if not numbers:
        return
    count = numbers[0]  # the outermost frame of a cell is the cell that ran
    history = getattr(shell, "history_manager", None)
    raw = history.input_hist_raw if history is not None else []
    source = raw[count] if 0 <= count < len(raw) else ""
    frames = None if isinstance(error, SyntaxError) else _user_frames(error.__traceback__)
    errors.record(_as_cell_error(error, frames, count, source, shell))


def _as_cell_error(error: BaseException, frames: TracebackType | None, count: int, source: str,
                   shell: Any) -> CellError:
    name = _type_name(type(error))
    message = _safe_str(error)
    from_magic = _raised_by_our_magic(error)
    if from_magic or isinstance(error, (UsageError, ReplicateMagicError)):
        # What the notebook showed: the error's one line.
        return cell_error(count, source, name, message, (), one_line=True, from_magic=from_magic)
    parts = traceback.TracebackException(type(error), error, frames, compact=True).format()
    return cell_error(count, source, name, message, list(parts), label=lambda file: _named(shell, file))


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the cell's own frame on: IPython's run_code frame left out."""
    while tb is not None and tb.tb_frame.f_code.co_filename == _IPYTHON_RUNNER:
        tb = tb.tb_next
    return tb


def _raised_by_our_magic(error: BaseException) -> bool:
    """The error left ``%%replicate``/``%replicate`` (their frame is in its traceback)."""
    return any(frame.f_code.co_name == "replicate" and frame.f_globals.get("__name__") == "replicate_magic.magics"
               for frame, _ in traceback.walk_tb(error.__traceback__))


def _cell_label(shell: Any, file: str) -> str | None:
    compiler = getattr(shell, "compile", None)
    try:
        named = compiler.format_code_name(file) if compiler is not None else None
    except Exception:  # an older or foreign compiler
        return None
    return named[1] if named else None  # ("Cell", "In[3]")


def _named(shell: Any, file: str) -> str | None:
    cell = _cell_label(shell, file)
    return f"Cell {cell}" if cell else None


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    return cls.__qualname__ if module in ("builtins", "__main__", "") else f"{module}.{cls.__qualname__}"


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return "<the exception's str() failed>"


# -- %replicate fix ---------------------------------------------------------------------------------


def ask_fix(magics: ReplicateMagics, args: list[str]) -> None:
    """``%replicate fix [N] [flags]``: one turn asking the model to explain cell N's error (the
    most recent one without N) given its source and traceback, and to propose a fix. One-shot:
    the conversation is neither sent nor changed."""
    parser = flag_parser("%replicate fix", only=_FIX_FLAGS, add_help=False)
    parser.add_argument("cell", nargs="?")
    parsed = parser.parse_args(args)
    options = replace(options_from(parsed), no_history=True)
    if len(options.models) > 1:
        raise UsageError("%replicate fix asks one model: give one -m")
    if options.format not in (None, "markdown", "text", "code"):  # its answer is prose and a code block
        raise UsageError(f"%replicate fix takes -f markdown, text or code, not -f {options.format}")
    running = magics.running_count()
    if parsed.cell is None:
        error = magics.errors.latest()
        if error is None:
            raise UsageError(f"Nothing to fix: {magics.errors.none_yet()}.")
    else:
        if not re.fullmatch(r"[0-9]+", parsed.cell):
            raise UsageError(f"Usage: %replicate {FIX_USAGE} (N: the cell's number, as in In[N])")
        count = int(parsed.cell)
        error = magics.errors.of_cell(count)
        if error is None:
            raise UsageError(f"Nothing to fix in cell {count}: {magics.errors.missing(count, running)}.")
    prompt = fix_prompt(error)
    # The line under the reply names what was sent, as for {In[N]} and {Err[N]} in a cell.
    magics.ask_shown(prompt, options, Expansion(prompt, names=(f"{{In[{error.count}]}}", f"{{Err[{error.count}]}}")))


# -- -f code ------------------------------------------------------------------------------------------


def code_into_new_cell(shell: Any, reply: str) -> str:
    """Put the reply's code (its first fenced block, else the whole reply) into a new cell
    below; what to say about it under the reply."""
    code = code_of(reply)
    if not code.strip():
        return "no code to put in a new cell: the reply is empty"
    shell.set_next_input(code, replace=False)
    return "the code is in a new cell below" if _in_a_notebook(shell) else "the code is at the next prompt"


def _in_a_notebook(shell: Any) -> bool:
    return type(shell).__module__.startswith("ipykernel")
