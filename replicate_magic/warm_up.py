"""Import, in the background, what the first ``%%replicate`` cell needs.

``%load_ext`` itself stays cheap: it starts this thread and returns. While the user types the
first cell, the thread imports aiohttp (about 120 ms, 40 of them aiohttp building its TLS
contexts), the client, the chat, and builds the Markdown renderer, so that cell's first token is not behind
them. If the cell comes first (Run All), Python's import lock makes it wait for the module the
thread is importing, and no import happens twice. A failure here is silent: the cell that
needs the module imports it again and reports the error there.
"""

from __future__ import annotations

import threading
from importlib import import_module

THREAD_NAME = "replicate-magic-warm-up"

# What the first turn imports, in the order it imports them (display brings markdown-it, chat aiohttp).
MODULES = (
    "replicate_magic.display",
    "replicate_magic.request",
    "replicate_magic.cancels",
    "replicate_magic.chat",
    "replicate_magic.loop",
    "replicate_magic.journal",
    "replicate_magic.cell_turn",
)


def _import_all() -> None:
    try:
        for name in MODULES:
            import_module(name)
        # The renderer builds its Markdown parser (markdown-it and its plugins) on first use.
        import_module("replicate_magic.render").markdown_html("*ready*")
    except Exception:  # reported by the cell that needs it, not here
        return


# The thread starts a moment after %load_ext returns, so it does not share the GIL with the
# rest of that cell; under Run All the next cell imports what it needs itself meanwhile.
DELAY = 0.05


def start() -> threading.Thread:
    """Start the imports in a daemon thread (it never delays the kernel's exit)."""
    thread = threading.Timer(DELAY, _import_all)
    thread.name, thread.daemon = THREAD_NAME, True
    thread.start()
    return thread
