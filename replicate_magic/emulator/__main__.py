"""Command line: run the Replicate emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import NoReturn

from .models import MODELS
from .server import Emulator

_EPILOG = """\
Point any Replicate client at the emulator with two environment variables,
e.g. before starting Jupyter:

  REPLICATE_BASE_URL=http://127.0.0.1:8700
  REPLICATE_API_TOKEN=<the --token value, or any value without --token>

Emulated models:
  {models}

Replies are deterministic and echo the prompt, turn, system prompt and
temperature, so you can check what reached the "model". Streams are served
on the second port, like Replicate's separate streaming host; output files
(images, audio) on a third, like replicate.delivery, without a token and for
--file-lifetime seconds. Vision models say the size, type and sha256 of the
image they received. The Files API (POST /v1/files) keeps uploads for a day.

Only requests addressed to the --host address (or localhost) and its port are
answered, others get 403: no web page can read your prompts through DNS
rebinding. Request bodies over 10 MiB get 413.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535, 0 = any free port)")
    return port


def _token(text: str) -> str:
    # The server strips the header value, so such a token could never match.
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError("a token must be non-empty, without spaces or control characters")
    return text


def _seconds_or_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text!r}")
    return value


def _burst(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def _deployment(text: str) -> tuple[str, str]:
    name, equals, model = text.partition("=")
    if not equals or name.count("/") != 1 or model not in MODELS:
        raise argparse.ArgumentTypeError(f"expected OWNER/NAME=MODEL with an emulated model, not {text!r}")
    return name, model


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m replicate_magic.emulator",
        description="Offline emulator of Replicate's HTTP API and SSE streams,\n"
        "for testing notebooks without network access or an API token.",
        epilog=_EPILOG.format(models="\n  ".join(MODELS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8700, help="API port (default: %(default)s; 0 = any free)")
    parser.add_argument("--stream-port", type=_port, default=8701,
                        help="SSE stream port (default: %(default)s; 0 = any free)")
    parser.add_argument("--file-port", type=_port, default=0,
                        help="output file host port (default: %(default)s = any free; URLs come in outputs)")
    parser.add_argument("--file-lifetime", type=_seconds_or_rate, default=3600.0,
                        help="seconds output files stay downloadable (default: %(default)s)")
    parser.add_argument("--deployment", type=_deployment, action="append", default=[],
                        metavar="OWNER/NAME=MODEL", help="serve a deployment that runs MODEL (repeatable)")
    parser.add_argument("--token", type=_token, default=None,
                        help="require exactly this API token (default: accept any non-empty token)")
    parser.add_argument("--tokens-per-second", type=_seconds_or_rate, default=30.0,
                        help="output pacing; 0 = as fast as possible (default: %(default)s)")
    parser.add_argument("--cold-start", type=_seconds_or_rate, default=0.0,
                        help="seconds each prediction stays 'starting' (default: %(default)s)")
    parser.add_argument("--create-rate-limit", type=_seconds_or_rate, default=600.0, metavar="PER_MINUTE",
                        help="creates allowed a minute, as on Replicate; 0 = no limit (default: %(default)s)")
    parser.add_argument("--create-burst", type=_burst, default=None, metavar="N",
                        help="creates allowed at once before 429s (default: a minute's worth)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    emulator = Emulator(
        token=args.token, tokens_per_second=args.tokens_per_second, cold_start=args.cold_start,
        host=args.host, port=args.port, stream_port=args.stream_port, file_port=args.file_port,
        file_lifetime=args.file_lifetime, deployments=dict(args.deployment),
        create_rate_limit=args.create_rate_limit, create_burst=args.create_burst,
    )
    try:
        emulator.start()
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    # SIGTERM ends as cleanly as Ctrl-C (e.g. when a test harness or IDE stops us).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Replicate emulator: API on {emulator.base_url}, streams on {emulator.stream_base}, "
          f"files on {emulator.file_base}")
    print("Use it with these environment variables:")
    print(f"REPLICATE_BASE_URL={emulator.base_url}")
    print(f"REPLICATE_API_TOKEN={args.token or 'any-value'}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    print("Emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
