"""The text of an HTML fragment as a reader sees it, for the tests of the panel's widgets."""

from __future__ import annotations

from html.parser import HTMLParser


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
