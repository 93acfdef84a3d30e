"""Driving a ChatPanel as a user does, for the tests of the panel's widgets: its buttons,
Send, waiting for a turn, and the text of its HTML as a reader sees it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from html.parser import HTMLParser

from ipywidgets import Button

from replicate_magic.panel import ChatPanel


def buttons(panel: ChatPanel) -> dict[str, Button]:
    return {w.description: w for w in walk(panel) if isinstance(w, Button)}


def walk(widget) -> list:
    found = []
    for child in getattr(widget, "children", ()):
        found += [child, *walk(child)]
    return found


def type_and_send(panel: ChatPanel, text: str) -> None:
    panel._prompt.value = text
    buttons(panel)["Send"].click()


def wait(panel: ChatPanel, timeout: float = 10) -> None:
    """Until the turn is over, the way a notebook waits: ``await panel.model.wait()``."""
    asyncio.run(asyncio.wait_for(panel.model.wait(), timeout))


def wait_until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)



def visible(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    return "".join(parser.text)


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("p", "div", "br", "li", "pre"):
            self.text.append("\n")
