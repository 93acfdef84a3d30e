"""The notebook's errors as prompt text (errors_context, pure): cleaned, cells named, within a
budget that keeps the head and the innermost frames, a bounded memory of failing cells, and
the one-line refusals of ``{Err}`` / ``{Err[N]}`` that name what is missing."""

from __future__ import annotations

import linecache
import traceback

import pytest

from replicate_magic.errors import InvalidRequestError
from replicate_magic.errors_context import (
    TRACEBACK_BUDGET,
    CellError,
    CellErrors,
    ErrorLookup,
    cell_error,
    fix_prompt,
    relabel,
    trimmed,
)


def parts_of(error: BaseException) -> list[str]:
    """As the hook formats an error: from the code's own frame on (``raised``'s left out, as
    IPython's run_code frame is)."""
    frames = error.__traceback__.tb_next if error.__traceback__ is not None else None
    return list(traceback.TracebackException(type(error), error, frames, compact=True).format())


def raised(code: str, filename: str = "/tmp/ipykernel_1/42.py") -> BaseException:
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)  # as IPython does
    try:
        exec(compile(code, filename, "exec"), {})
    except Exception as error:
        return error
    raise AssertionError("the code did not raise")


def an_error(count: int, *, from_magic: bool = False, source: str = "1/0") -> CellError:
    return cell_error(count, source, "ZeroDivisionError", "division by zero",
                      ["Traceback (most recent call last):\n", "ZeroDivisionError: division by zero\n"],
                      from_magic=from_magic)


# -- the text ------------------------------------------------------------------------------------


def test_a_traceback_is_python_s_own_text_with_the_cell_named_as_ipython_names_it() -> None:
    error = raised("def half(x):\n    return x / 0\nhalf(4)\n")
    cell = cell_error(7, "...", "ZeroDivisionError", str(error), parts_of(error),
                      label=lambda file: "Cell In[7]" if file == "/tmp/ipykernel_1/42.py" else None)
    assert cell.traceback.startswith("Traceback (most recent call last):\n")
    assert "  Cell In[7], line 3, in <module>\n" in cell.traceback
    assert "  Cell In[7], line 2, in half\n" in cell.traceback
    assert "/tmp/ipykernel_1" not in cell.traceback
    assert cell.traceback.endswith("ZeroDivisionError: division by zero")
    assert cell.headline == "ZeroDivisionError: division by zero" and cell.cell == "In[7]"


def test_colours_and_control_characters_are_removed_from_message_and_frames() -> None:
    error = raised("raise ValueError(chr(27) + '[31mred' + chr(27) + '[0m ' + chr(27) + ']52;c;ZXZpbA==' + chr(7) + 'x')")
    cell = cell_error(1, "", "ValueError", str(error), parts_of(error))
    assert "\x1b" not in cell.traceback and "\x07" not in cell.traceback
    assert cell.traceback.endswith("ValueError: red x")
    assert cell.message == "red x"


def test_other_files_keep_their_names() -> None:
    assert relabel('  File "/usr/lib/python3/json/decoder.py", line 3, in decode\n', lambda f: None) == (
        '  File "/usr/lib/python3/json/decoder.py", line 3, in decode\n')
    assert relabel('  File "/tmp/x.py", line 12\n', lambda f: "Cell In[2]") == "  Cell In[2], line 12\n"


def test_a_syntax_error_names_the_cell_and_points_at_the_place() -> None:
    error = raised("x = (1,\n")
    cell = cell_error(3, "x = (1,", "SyntaxError", str(error), parts_of(error), label=lambda f: "Cell In[3]")
    assert "Cell In[3], line 1" in cell.traceback
    assert cell.traceback.splitlines()[-1].startswith("SyntaxError: ")


def test_a_chained_error_keeps_both_parts() -> None:
    error = raised("try:\n    {}['a']\nexcept KeyError:\n    raise ValueError('no a')\n")
    text = cell_error(1, "", "ValueError", "no a", parts_of(error)).traceback
    assert "KeyError: 'a'" in text and "During handling of the above exception" in text
    assert text.endswith("ValueError: no a")


def test_our_own_errors_are_their_one_line() -> None:
    cell = cell_error(2, "%replicate fix", "UsageError", "Nothing to fix", ["ignored\n"], one_line=True)
    assert cell.traceback == "UsageError: Nothing to fix" and cell.one_line


# -- the budget ----------------------------------------------------------------------------------


def test_a_traceback_within_the_budget_is_whole() -> None:
    parts = ["Traceback (most recent call last):\n", '  File "a", line 1, in f\n    f()\n', "E: x\n"]
    assert trimmed(parts, 1_000) == "".join(parts).rstrip("\n")


def test_a_deep_traceback_keeps_its_head_and_its_last_frames_and_says_what_was_cut() -> None:
    # Mutual recursion: no "[Previous line repeated]" folds these frames, so they are many.
    code = "def a(n):\n    return b(n - 1) if n else 1 / 0\ndef b(n):\n    return a(n)\na(400)\n"
    error = raised(code)
    parts = parts_of(error)
    assert len("".join(parts)) > 4 * TRACEBACK_BUDGET
    text = cell_error(1, code, "ZeroDivisionError", "division by zero", parts).traceback
    assert len(text) <= TRACEBACK_BUDGET
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'line 5, in <module>' in lines[1]  # the outermost frame: where the cell called
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert "return b(n - 1) if n else 1 / 0" in lines[-3]  # the innermost frame, where it failed
    (note,) = [line for line in lines if "cut here" in line]
    cut_frames = int(note.split("[… ")[1].split(" frames")[0])
    shown_frames = sum(1 for line in lines if line.lstrip().startswith("File "))
    assert cut_frames + shown_frames == sum(1 for p in parts if p.lstrip().startswith("File "))
    assert "characters" in note


def test_a_huge_message_keeps_its_start_and_end() -> None:
    message = "start " + "x" * 50_000 + " end"
    parts = ["Traceback (most recent call last):\n", '  File "a", line 1, in <module>\n', f"ValueError: {message}\n"]
    text = trimmed(parts, 2_000)
    assert len(text) <= 2_000
    assert text.startswith("Traceback") and "ValueError: start" in text and text.endswith(" end")
    assert "characters cut" in text


@pytest.mark.parametrize("budget", [50, 200, 777, 3_000])
def test_the_budget_holds_for_any_size(budget: int) -> None:
    parts = ["Traceback (most recent call last):\n"] + [f'  File "f{i}.py", line {i}, in g\n    g()\n' for i in range(300)]
    parts.append("RecursionError: " + "m" * 5_000 + "\n")
    assert len(trimmed(parts, budget)) <= budget + 130  # the note's room, for absurdly small budgets


# -- the memory and the lookups -----------------------------------------------------------------


def test_the_book_keeps_the_last_errors_only() -> None:
    book = CellErrors(kept=3)
    for count in range(1, 6):
        book.record(an_error(count))
    assert [e.count for e in book] == [3, 4, 5] and book.dropped == 2
    assert book.of_cell(2) is None and book.of_cell(4) is not None
    assert "no longer kept (the last 3 are)" in book.missing(2, running=9)


def test_err_is_the_latest_error_not_raised_by_the_magic_itself() -> None:
    book = CellErrors()
    book.record(an_error(3, source="1/0"))
    book.record(an_error(5, from_magic=True, source="%replicate fix 99"))
    lookup = ErrorLookup(book, running=6)
    assert book.latest() is not None and book.latest().count == 3
    assert lookup._placeholder_text_() == book.of_cell(3).traceback
    assert lookup[5] == book.of_cell(5).traceback  # by number, whatever raised it


@pytest.mark.parametrize(
    ("count", "why"),
    [
        (4, "{Err[4]}: cell In[4] raised no error (since replicate_magic was loaded); errors are kept for In[3]; "
            "nothing was sent."),
        (9, "{Err[9]}: that is this cell; nothing was sent."),
        (99, "{Err[99]}: cell In[99] has not run yet; nothing was sent."),
        (0, "{Err[0]}: cells are numbered from 1 (In[1], In[2], ...); nothing was sent."),
        (-1, "{Err[-1]}: cells are numbered from 1 (In[1], In[2], ...); nothing was sent."),
    ],
)
def test_a_cell_without_an_error_is_refused_saying_why(count: int, why: str) -> None:
    book = CellErrors()
    book.record(an_error(3))
    with pytest.raises(InvalidRequestError) as raised_error:
        ErrorLookup(book, running=9)[count]
    assert str(raised_error.value) == why


def test_err_with_no_error_yet_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match=r"^\{Err\}: no cell has failed yet"):
        ErrorLookup(CellErrors())._placeholder_text_()
    book = CellErrors()
    book.record(an_error(2, from_magic=True))
    with pytest.raises(InvalidRequestError, match=r"except %replicate ones \(use \{Err\[N\]\}"):
        ErrorLookup(book)._placeholder_text_()


# -- %replicate fix's prompt ---------------------------------------------------------------------


def test_the_fix_prompt_carries_the_source_and_the_traceback_in_fences_that_hold_them() -> None:
    source = 'print("""```""")\n1/0'
    error = an_error(4, source=source)
    prompt = fix_prompt(error)
    assert "Cell In[4]" in prompt and "ZeroDivisionError" in prompt and "propose a fix" in prompt
    assert f"````python\n{source}\n````" in prompt  # longer than the ``` inside the cell
    assert f"```text\n{error.traceback}\n```" in prompt


def test_a_cell_magic_s_source_is_not_called_python_and_a_long_source_is_cut_by_lines() -> None:
    assert "```\n%%bash\nexit 3\n```" in fix_prompt(an_error(1, source="%%bash\nexit 3"))
    source = "\n".join(f"line_{i} = {i}" for i in range(5_000))
    prompt = fix_prompt(an_error(1, source=source), source_budget=2_000)
    assert "line_0 = 0" in prompt and "line_4999 = 4999" in prompt
    assert "lines cut here to fit the prompt" in prompt and len(prompt) < 2_000 + 1_000
