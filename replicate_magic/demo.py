"""``python -m replicate_magic.demo [NOTEBOOK]``: run a notebook in a real kernel, replies streaming.

Each code cell runs in a fresh ipykernel, as JupyterLab would run it; replies are printed
to the terminal as their display updates arrive. Without ``REPLICATE_API_TOKEN`` the
bundled emulator answers (offline, free). With ``--save OUT.ipynb`` the executed notebook
is written, outputs included. Exits non-zero when a cell fails that is not tagged
``raises-exception``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .terminal import clean

DEFAULT_NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate_magic.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", default=str(DEFAULT_NOTEBOOK))
    parser.add_argument("--save", metavar="OUT.ipynb", help="write the executed notebook here")
    parser.add_argument("--tokens-per-second", type=float, default=40.0, help="emulator pace (default 40)")
    args = parser.parse_args(argv)

    import nbformat

    notebook = nbformat.read(args.notebook, as_version=4)
    with ExitStack() as stack:
        env = dict(os.environ)
        if not (env.get("REPLICATE_API_TOKEN") or env.get("REPLICATE_API_KEY")):
            from .emulator import Emulator

            emulator = stack.enter_context(Emulator(tokens_per_second=args.tokens_per_second))
            env.update(REPLICATE_BASE_URL=emulator.base_url, REPLICATE_API_TOKEN="emulator")
            # The emulator's replies are not worth keeping: this run logs to a file of its own.
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="replicate-magic-demo-"))
            env["REPLICATE_MAGIC_DB"] = os.path.join(scratch, "log.db")
            print(f"No REPLICATE_API_TOKEN: answering from the emulator at {emulator.base_url}\n")
        failures = _run(notebook, env)
    if args.save:
        nbformat.write(notebook, args.save)
        print(f"\nSaved the executed notebook to {args.save}")
    return 1 if failures else 0


def _run(notebook: Any, env: dict[str, str]) -> int:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", env=env)
    failures = 0
    try:
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for number, cell in enumerate(code_cells, start=1):
            print(f"\nIn [{number}]: {cell.source}")
            cell.outputs, status = _execute(client, cell)
            expected = "raises-exception" in cell.metadata.get("tags", [])
            if status == "error" and not expected:
                failures += 1
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return failures


def _execute(client: Any, cell: Any) -> tuple[list[Any], str]:
    """Run one cell, echoing its outputs; display updates print as text deltas."""
    import nbformat

    msg_id = send_execute(client, cell.source, cell.get("id"))
    outputs: list[Any] = []
    by_display: dict[str, Any] = {}  # display id -> its output in ``outputs``
    echo = _Echo()
    while True:
        message = client.get_iopub_msg(timeout=300)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        display_id = content.get("transient", {}).get("display_id") if isinstance(content, dict) else None
        if kind == "update_display_data" and display_id is not None:
            echo.update(display_id, content["data"].get("text/plain", ""))
            if display_id in by_display:
                by_display[display_id]["data"] = content["data"]
        elif kind in ("display_data", "execute_result", "stream", "error"):
            output = nbformat.v4.output_from_msg(message)
            outputs.append(output)
            if kind == "stream":
                echo.write(clean(content["text"]))
            elif kind == "error":
                echo.line("\n".join(content["traceback"]), red=True)
            elif display_id:
                by_display[display_id] = output
                echo.update(display_id, content["data"].get("text/plain", ""))
            else:
                echo.line(content["data"].get("text/plain", ""))
    echo.line("")
    reply = client.get_shell_msg(timeout=60)
    return outputs, reply["content"]["status"]


def send_execute(
    client: Any, code: str, cell_id: str | None = None, *, silent: bool = False, stop_on_error: bool = True,
    user_expressions: dict[str, str] | None = None,
) -> str:
    """Send an execute_request carrying the cell id in its metadata, as JupyterLab does; its msg_id."""
    content = {"code": code, "silent": silent, "store_history": not silent,
               "user_expressions": user_expressions or {}, "allow_stdin": False, "stop_on_error": stop_on_error}
    message = client.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
    client.shell_channel.send(message)
    return str(message["header"]["msg_id"])


class _Echo:
    """Terminal echo of a cell's outputs; a streaming display prints only what is new."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.shown: dict[str, str] = {}  # display id -> text already printed
        self.current: str | None = None  # the display id the cursor's line belongs to
        self.mid_line = False

    def update(self, display_id: str, text: str) -> None:
        text = clean(text)  # a reply's own escape sequences never reach the terminal
        before = self.shown.get(display_id, "")
        if display_id == self.current and text.startswith(before):
            self.write(text[len(before):])
        else:  # another output, or a status that gave way to the reply: a fresh line
            if display_id == self.current and self.tty:
                sys.stdout.write("\r\033[K")
                self.mid_line = False
            self.line("")
            self.write(text)
        self.current = display_id
        self.shown[display_id] = text

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        if text:
            self.mid_line = not text.endswith("\n")

    def line(self, text: str, red: bool = False) -> None:
        """Start a new line (if needed) and print ``text`` on it."""
        if self.mid_line:
            self.write("\n")
        self.current = None
        text = clean(text)  # only our own colour below may reach the terminal
        if text:
            self.write((f"\033[31m{text}\033[0m" if red and self.tty else text) + "\n")


if __name__ == "__main__":
    sys.exit(main())
