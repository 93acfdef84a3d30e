"""multipart/form-data bodies (RFC 7578), parsed from bytes already read (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

__all__ = ["Part", "parse_multipart", "header_param"]


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    data: bytes


def header_param(value: str, param: str) -> str | None:
    """A parameter of a header value (``boundary`` of a Content-Type), quotes and RFC 2231 handled."""
    message = Message()
    message["content-type"] = value
    found = message.get_param(param)
    return found if isinstance(found, str) else None


def _part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):  # a part with no headers at all
        head, data = b"", raw[2:]
    else:
        head, _, data = raw.partition(b"\r\n\r\n")
    headers = HeaderParser().parsestr(head.decode("utf-8", "surrogateescape"))
    name = headers.get_param("name", header="content-disposition")
    return Part(name=name if isinstance(name, str) else None, filename=headers.get_filename(),
                content_type=headers.get_content_type() if "content-type" in headers else None,
                data=data)


def parse_multipart(body: bytes, content_type: str) -> list[Part] | None:
    """The parts of `body`, or None when it is not a well-formed multipart body."""
    boundary = header_param(content_type, "boundary")
    if not boundary or not content_type.lower().startswith("multipart/"):
        return None
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    at = body.find(delimiter)
    if at < 0:
        return None
    parts: list[Part] = []
    at += len(delimiter)
    while not body.startswith(b"--", at):  # the close delimiter ends the body
        line_end = body.find(b"\r\n", at)  # (after optional transport padding)
        end = body.find(b"\r\n" + delimiter, line_end)
        if line_end < 0 or end < 0:
            return None
        parts.append(_part(body[line_end + 2:end]))
        at = end + 2 + len(delimiter)
    return parts
