"""What HTML our outputs may hold: a small allow-list, checked with the standard library's parser.

Used by the renderer's tests, the property tests and the kernel tests, which check every
display bundle a real kernel sent. Anything outside the list (an element, an attribute, a
link scheme, a class, a style) is reported as a violation.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from pygments.token import STANDARD_TYPES

from replicate_magic.render import COLUMNS_CSS, FILES_CSS, _code_css

_BLOCK = ("p", "div", "blockquote", "ul", "li", "table", "thead", "tbody", "tr", "hr", "br",
          "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "sub", "span", "pre", "code")
ATTRIBUTES: dict[str, set[str]] = {name: set() for name in _BLOCK}
ATTRIBUTES.update({
    "div": {"class"}, "p": {"class"}, "span": {"class"}, "pre": {"class"}, "code": {"class"},
    "ol": {"start"}, "th": {"style"}, "td": {"style"}, "a": {"href", "target", "rel", "class"},
    "style": set(),
    # Output files: only our own data: URIs of a sniffed, showable type (render.files_html).
    "figure": {"class"}, "figcaption": set(), "img": {"src", "alt"}, "audio": {"controls", "src"},
    "video": {"controls", "src"},
})
_SAFE_SRC = {
    "img": re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]*={0,2}"),
    "audio": re.compile(r"data:audio/(?:wav|mpeg|ogg|flac);base64,[A-Za-z0-9+/]*={0,2}"),
    "video": re.compile(r"data:video/(?:mp4|webm);base64,[A-Za-z0-9+/]*={0,2}"),
}
_CLASS = re.compile(
    r"rm-md|rm-plain|rm-code|rm-msg|rm-user|rm-status|rm-error|rm-note|rm-metrics|rm-role|rm-image-link|mathjax_ignore|mathjax_process"
    r"|rm-files|rm-file|rm-columns|rm-column|rm-column-head|math|inline|display|language-[\w+#.-]+"
)
_PYGMENTS_CLASSES = set(STANDARD_TYPES.values()) - {""}
_SAFE_HREF = re.compile(r"(?:https?:|mailto:)", re.IGNORECASE)
_STYLE = re.compile(r"text-align:(?:left|right|center)")
_ALLOWED_CSS = {_code_css(), FILES_CSS, COLUMNS_CSS}


class _Checker(HTMLParser):
    def __init__(self, allowed: dict[str, set[str]], css: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.allowed = allowed
        self.css = css
        self.violations: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.allowed:
            self.violations.append(f"element <{tag}>")
            return
        self._in_style = tag == "style"
        for name, value in attrs:
            value = value or ""
            if name not in self.allowed[tag]:
                self.violations.append(f"attribute {name}= on <{tag}>")
            elif name == "href" and not _SAFE_HREF.match(value.strip()):
                self.violations.append(f"link to {value!r}")
            elif name == "class" and not all(_CLASS.fullmatch(c) or c in _PYGMENTS_CLASSES for c in value.split()):
                self.violations.append(f"class {value!r}")
            elif name == "style" and not _STYLE.fullmatch(value):
                self.violations.append(f"style {value!r}")
            elif name == "src" and not _SAFE_SRC[tag].fullmatch(value):
                self.violations.append(f"source {value[:80]!r} on <{tag}>")
            elif name == "controls" and value:
                self.violations.append(f"controls={value!r}")
            elif name == "target" and value != "_blank":
                self.violations.append(f"target {value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and data not in self.css:
            self.violations.append(f"a style sheet that is not ours: {data[:80]!r}")

    def handle_comment(self, data: str) -> None:
        self.violations.append("a comment")

    def handle_pi(self, data: str) -> None:
        self.violations.append("a processing instruction")

    def unknown_decl(self, data: str) -> None:
        self.violations.append("a declaration")


def violations(fragment: str, *, extra: dict[str, set[str]] | None = None, css: set[str] = frozenset()) -> list[str]:
    """What in ``fragment`` is outside the allow-list (``extra``: more elements, for the panel)."""
    allowed = {**ATTRIBUTES, **(extra or {})}
    checker = _Checker(allowed, _ALLOWED_CSS | set(css))
    checker.feed(fragment)
    checker.close()
    return checker.violations
