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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

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
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            print(f"\033[1mIn [{index}]:\033[0m {cell.source}")
            cell.outputs, status = _execute(client, cell)
            expected = "raises-exception" in cell.metadata.get("tags", [])
            if status == "error" and not expected:
                failures += 1
            print()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return failures


def _execute(client: Any, cell: Any) -> tuple[list[Any], str]:
    """Run one cell, echoing its outputs; stream display updates as text deltas."""
    import nbformat

    msg_id = send_execute(client, cell.source, cell.get("id"))
    outputs: list[Any] = []
    shown: dict[str, str] = {}  # display id -> text already printed
    by_display: dict[str, Any] = {}
    while True:
        message = client.get_iopub_msg(timeout=300)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        if kind in ("display_data", "update_display_data", "execute_result"):
            text = content["data"].get("text/plain", "")
            display_id = content.get("transient", {}).get("display_id")
            if kind == "display_data" and shown:
                print()  # a new output starts on its own line
            if display_id:
                _print_delta(shown, display_id, text)
            else:
                print(text)
            output = nbformat.v4.output_from_msg(message) if kind != "update_display_data" else None
            if kind == "update_display_data" and display_id in by_display:
                by_display[display_id]["data"] = content["data"]
            elif output is not None:
                outputs.append(output)
                if display_id:
                    by_display[display_id] = output
        elif kind == "stream":
            sys.stdout.write(content["text"])
            outputs.append(nbformat.v4.output_from_msg(message))
        elif kind == "error":
            print("\033[31m" + "\n".join(content["traceback"]) + "\033[0m")
            outputs.append(nbformat.v4.output_from_msg(message))
    reply = client.get_shell_msg(timeout=60)
    return outputs, reply["content"]["status"]


def send_execute(client: Any, code: str, cell_id: str | None = None) -> str:
    """An execute_request carrying the cell id in its metadata, as JupyterLab sends it."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    message = client.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
    client.shell_channel.send(message)
    return str(message["header"]["msg_id"])


def _print_delta(shown: dict[str, str], display_id: str, text: str) -> None:
    before = shown.get(display_id, "")
    if text.startswith(before):
        sys.stdout.write(text[len(before):])
    else:  # a status line gave way to the reply, or a note was added: start the line again
        sys.stdout.write("\r\033[K" + text)
    sys.stdout.flush()
    shown[display_id] = text


if __name__ == "__main__":
    sys.exit(main())
