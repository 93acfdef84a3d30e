"""``python -m replicate_magic [options] PROMPT``: the %%replicate options from a shell.

The reply streams to standard output; errors are one line on standard error; control
characters and escape sequences from the model or the server are removed from both
(``replicate_magic.terminal``). ``-`` or no prompt reads it from standard input. Each run is
one turn (no history is kept between runs). ``--emulator`` answers from the bundled offline
emulator instead of Replicate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .options import CellOptions, flag_parser, options_from
from .settings import SETTINGS
from .terminal import TerminalSanitizer, clean

if TYPE_CHECKING:
    from .cancels import StopReport

PROG = "python -m replicate_magic"
# The one-turn options; chat, history, output and expansion flags belong to the notebook.
CLI_OPTIONS = ("models", "temperature", "top_p", "top_k", "max_tokens", "stop", "system", "inputs", "images",
               "timeout", "cache", "refresh", "save")


def parser() -> argparse.ArgumentParser:
    """The CLI's own parser, built from the same declarations as the magic's flags."""
    built = flag_parser(PROG, only=CLI_OPTIONS, description="Stream a reply from a model hosted on "
                        "Replicate to the terminal.")
    for action in built._actions:  # the magic's -m repeats (side by side); one run here is one model
        if action.dest == "models":
            action.help = f"{SETTINGS['model'].help}; one per run"
    built.add_argument("--emulator", action="store_true",
                       help="answer from the bundled offline emulator instead of Replicate")
    built.add_argument("prompt", nargs="*", metavar="PROMPT",
                       help="the prompt; '-' or none reads it from standard input; -- ends the options")
    return built


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = parser()
    # After "--" every word is prompt. Split here: parse_intermixed_args mishandles a leading "--".
    cut = args.index("--") if "--" in args else len(args)
    flags, literal = args[:cut], args[cut + 1:]
    if "-h" in flags or "--help" in flags:
        print(command.format_help())
        return 0
    try:
        # Intermixed: options may come after prompt words ("Hello --max-tokens 5 there").
        namespace = command.parse_intermixed_args(flags)
        options = options_from(namespace)
        if len(options.models) > 1:  # columns need a notebook; a shell gets one reply
            raise UsageError("one -m per run; to compare models side by side, use %%replicate -m A -m B "
                             "in a notebook")
    except UsageError as error:
        print(f"usage error: {error} (see {PROG} --help)", file=sys.stderr)
        return 2
    prompt = _prompt(namespace.prompt + literal)
    if not prompt.strip():
        print("usage error: no prompt: pass it as an argument or on standard input", file=sys.stderr)
        return 2
    from .cancels import StopReport
    from .errors import ReplicateMagicError

    stops = StopReport()  # what an interrupt's cancel did, to say it as it is
    try:
        if namespace.emulator:
            from .emulator import Emulator

            with Emulator(tokens_per_second=40) as emulator:
                return asyncio.run(_ask(options, prompt, stops, emulator.base_url, "emulator"))
        return asyncio.run(_ask(options, prompt, stops))
    except ReplicateMagicError as error:
        # Server text is in the message: one line, without control sequences.
        print(f"\nerror: {' '.join(clean(str(error)).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: {stops.message()}", file=sys.stderr)
        return 130


def _prompt(words: list[str]) -> str:
    """The words, joined; ``-`` alone or no words at all read standard input."""
    if words in ([], ["-"]):
        return "" if sys.stdin.isatty() else sys.stdin.read()
    return " ".join(words)


async def _ask(options: CellOptions, prompt: str, stops: StopReport, base: str | None = None,
               token: str | None = None) -> int:
    import os
    from dataclasses import replace

    from .chat import ChatSession
    from .conversation import ConversationStore
    from .display import result_notes
    from .journal import shared_log
    from .request import Configured, build_request
    from .uploads import load_files

    if base is not None:  # the emulator, for this process only: never a real token, never a proxy
        os.environ["REPLICATE_BASE_URL"] = base
        os.environ["REPLICATE_API_TOKEN"] = token or "emulator"
        for name in [n for n in os.environ if n.lower() in _PROXY_VARIABLES]:
            del os.environ[name]
    # One turn, no history: nothing outlives the process.
    request = build_request(prompt.strip(), replace(options, no_history=True), Configured())
    # Files named by -i KEY=@PATH and --image are read now; there are no variables for @{name}.
    request = replace(request, settings=load_files(request.settings, None))

    sanitizer = TerminalSanitizer()  # one per reply: a sequence may be split across tokens

    def write(token: str) -> Any:
        sys.stdout.write(sanitizer.feed(token))
        sys.stdout.flush()

    # Logged like a notebook's exchanges (so --cache replays them), except the emulator's.
    session = ChatSession(ConversationStore(), log=None if base is not None else shared_log())
    with stops.watching():
        result = await session.ask(request, on_token=write)
    sys.stdout.write(sanitizer.flush())
    print()
    for item in result.files or ():  # a model that makes files: a line each (and where it was saved)
        print(clean(item.listing()))
    notes = result_notes(result, await session.reported_metrics(result))
    print(clean(" · ".join(notes)), file=sys.stderr)
    return 0


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


if __name__ == "__main__":
    sys.exit(main())
