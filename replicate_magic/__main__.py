"""``python -m replicate_magic [options] PROMPT``: the %%replicate options from a shell.

The reply streams to standard output; errors are one line on standard error; control
characters and escape sequences from the model or the server are removed from both
(``replicate_magic.terminal``). ``-`` or no prompt reads it from standard input. Each run is
one turn (no history is kept between runs). ``--emulator`` answers from the bundled offline
emulator instead of Replicate.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .options import CellOptions, parse_cell_options, replicate_arguments

if TYPE_CHECKING:
    from .cancels import StopReport
from .terminal import TerminalSanitizer, clean


@replicate_arguments
def replicate(line: str, cell: str | None = None) -> None:
    """Stream a reply from a model hosted on Replicate to the terminal."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(replicate.parser.format_help().replace("%replicate", "python -m replicate_magic"))  # type: ignore[attr-defined]
        print("  PROMPT                the prompt; '-' or none reads standard input")
        return 0
    use_emulator = "--emulator" in args
    args = [a for a in args if a != "--emulator"]
    try:
        options, prompt = _split(args)
    except UsageError as error:
        print(f"usage error: {error}", file=sys.stderr)
        return 2
    if not prompt.strip():
        print("usage error: no prompt: pass it as an argument or on standard input", file=sys.stderr)
        return 2
    from .cancels import StopReport
    from .errors import ReplicateMagicError

    stops = StopReport()  # what an interrupt's cancel did, to say it as it is
    try:
        if use_emulator:
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


def _split(args: list[str]) -> tuple[CellOptions, str]:
    """Options as the magic reads them; the words left over are the prompt."""
    _, words = replicate.parser.parse_known_args(args)  # type: ignore[attr-defined]
    options_only = [a for a in args if a not in words or a.startswith("-")]
    unknown = [w for w in words if w.startswith("-") and w != "-"]
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    options = parse_cell_options(replicate, shlex.join(options_only))
    prompt = " ".join(w for w in words if w != "-")
    if not prompt or words == ["-"]:
        prompt = sys.stdin.read() if not sys.stdin.isatty() else prompt
    return options, prompt


async def _ask(options: CellOptions, prompt: str, stops: StopReport, base: str | None = None,
               token: str | None = None) -> int:
    import os

    from .catalog import DEFAULT_MODEL
    from .chat import ChatSession, TurnRequest
    from .client import Timeouts
    from .conversation import ConversationStore
    from .inputs import Settings

    if base is not None:  # the emulator, for this process only: never a real token, never a proxy
        os.environ["REPLICATE_BASE_URL"] = base
        os.environ["REPLICATE_API_TOKEN"] = token or "emulator"
        for name in [n for n in os.environ if n.lower() in _PROXY_VARIABLES]:
            del os.environ[name]
    request = TurnRequest(
        prompt=prompt.strip(),
        model=options.model or DEFAULT_MODEL,
        settings=Settings(max_tokens=options.max_tokens, temperature=options.temperature, top_p=options.top_p,
                          top_k=options.top_k, stop=options.stop, extra=dict(options.inputs)),
        system=options.system,
        use_history=False,
        timeouts=Timeouts(idle=options.timeout or 180.0),
    )

    sanitizer = TerminalSanitizer()  # one per reply: a sequence may be split across tokens

    def write(token: str) -> Any:
        sys.stdout.write(sanitizer.feed(token))
        sys.stdout.flush()

    session = ChatSession(ConversationStore())
    with stops.watching():
        result = await session.ask(request, on_token=write)
    sys.stdout.write(sanitizer.flush())
    print()
    print(clean((await session.reported_metrics(result)).line()), file=sys.stderr)
    return 0


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


if __name__ == "__main__":
    sys.exit(main())
