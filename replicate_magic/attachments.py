"""Files sent *in* to a model: what they are, and how they appear in an input. Pure: no I/O.

``-i KEY=@PATH``, ``-i KEY=@{name}`` and ``--image`` are parsed into a ``FileSource``; the
magic (which has the notebook's variables) or the CLI loads each into an ``Attachment``
(``uploads.load_files`` reads the file); ``inputs.build_input`` places attachments under the
model's own keys (``--image`` under the input its schema declares for images) and writes
each one as its *reference*::

    {"file": "photo.png", "sha256": "<64 hex digits>", "size": 48213, "type": "image/png"}

The reference is what the local log keeps as the exchange's input and what replay compares
(canonical JSON): a few dozen bytes however big the file, and the same for the same bytes
under the same name, however they travelled. Only just before the prediction is created
(``uploads.sendable``, called from ``streaming.PredictionStream.tokens``) does each reference
become what Replicate receives: a ``data:`` URI while the request's URIs stay under
``DATA_URI_LIMIT``, else the ``urls.get`` of an upload to the Files API. So megabytes of
base64 never reach the log, and a new upload URL (uploads expire after a day) never defeats
a replay.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError

__all__ = [
    "DATA_URI_LIMIT", "MAX_FILE_SIZE", "IMAGE_KEYS", "Attachment", "FileSource", "as_references",
    "attachments_in", "content_type_of", "image_key", "name_for", "parse_source", "put_images", "reference_hash",
    "sniff", "size_text",
]

# Replicate's "Input files" page (replicate.com/docs/topics/predictions/input-files): a data URI
# "is only recommended if the file is less than 1MB"; an upload "will work for files up to 100MB".
# The 1 MB is applied to the data URIs of one request together (base64 makes a file a third
# longer): the create request stays under 1 MB, where aiohttp also starts to warn of big bodies.
DATA_URI_LIMIT = 1_000_000
MAX_FILE_SIZE = 100_000_000  # also under the 100 MiB request body Replicate's front end takes

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REFERENCE_KEYS = frozenset({"file", "sha256", "size", "type"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileSource:
    """A file as written on the line, read only when the request is made: ``@PATH`` gives
    ``path``, ``@{name}`` gives ``variable`` (a notebook variable)."""

    path: str | None = None
    variable: str | None = None

    def __str__(self) -> str:
        return f"@{{{self.variable}}}" if self.variable is not None else f"@{self.path}"


def parse_source(text: str) -> FileSource:
    """``{name}`` -> a variable, anything else -> a path; ValueError(reason) when empty or odd."""
    if not text:
        raise ValueError("'@' names no file (allowed: @PATH, or @{name} for a variable)")
    if text.startswith("{") and text.endswith("}"):
        found = _VARIABLE.fullmatch(text)
        if found is None:
            raise ValueError(f"@{text}: {text[1:-1]!r} is not a variable name")
        return FileSource(variable=found.group(1))
    return FileSource(path=text)


@dataclass(frozen=True, eq=False)
class Attachment:
    """A file's bytes with its name and type, ready to be referenced and sent."""

    name: str
    data: bytes = field(repr=False)
    content_type: str
    sha256: str

    @classmethod
    def of(cls, data: bytes, name: str, content_type: str | None = None) -> Attachment:
        return cls(name, data, content_type or content_type_of(data, name), hashlib.sha256(data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)

    def reference(self) -> dict[str, Any]:
        """The short, stable form the log keeps and replay compares (see the module's note)."""
        return {"file": self.name, "sha256": self.sha256, "size": self.size, "type": self.content_type}

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __eq__(self, other: object) -> bool:  # the hash stands for the bytes: no megabyte compare
        return isinstance(other, Attachment) and self.reference() == other.reference()

    def __hash__(self) -> int:
        return hash((self.sha256, self.name))


def reference_hash(value: Any) -> str | None:
    """The sha256 of a reference (``Attachment.reference()``), None for any other value."""
    if isinstance(value, Mapping) and set(value) == _REFERENCE_KEYS:
        digest = value.get("sha256")
        if isinstance(digest, str) and _SHA256.fullmatch(digest):
            return digest
    return None


def attachments_in(*values: Any) -> list[Attachment]:
    """Every Attachment in these values (nested in mappings, lists and tuples), in order."""
    found: list[Attachment] = []
    for value in values:
        if isinstance(value, Attachment):
            found.append(value)
        elif isinstance(value, Mapping):
            found += attachments_in(*value.values())
        elif isinstance(value, (list, tuple)):
            found += attachments_in(*value)
    return found


def size_text(size: int) -> str:
    """``48213`` -> "48.2 kB", ``100_000_000`` -> "100 MB": decimal units, as Replicate states its limits."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


# -- the content type ---------------------------------------------------------------------------

# (offset, magic bytes, type): formats models take, recognised by their first bytes.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
)
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP = {b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"qt  ": "video/quicktime", b"avif": "image/avif",
         b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif"}


def sniff(data: bytes) -> str | None:
    """The type the bytes' magic number says, or None when they say nothing we know."""
    for offset, magic, kind in _MAGIC:
        if data.startswith(magic, offset) and (magic != b"BM" or len(data) > 26):
            return kind
    if data[:4] == b"RIFF" and data[8:12] in _RIFF:
        return _RIFF[data[8:12]]
    if data[4:8] == b"ftyp":
        return _FTYP.get(data[8:12], "video/mp4")
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM, or Matroska when its doctype says so
        return "video/x-matroska" if b"matroska" in data[:64] else "video/webm"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE6 == 0xE2:  # an MPEG layer III frame
        return "audio/mpeg"
    return None


@functools.cache
def _extensions() -> mimetypes.MimeTypes:
    # Python's own table, not the system's mime.types: a name gets the same type on every machine.
    return mimetypes.MimeTypes()


def content_type_of(data: bytes, name: str) -> str:
    """The bytes' own type, else the name's extension's, else application/octet-stream."""
    return sniff(data) or _extensions().guess_type(name, strict=False)[0] or "application/octet-stream"


def name_for(stem: str, data: bytes) -> str:
    """A file name for bytes that came without one: ``stem`` and their type's extension."""
    kind = sniff(data)
    return stem + ((_extensions().guess_extension(kind, strict=False) or "") if kind else "")


# -- where files go in a model's input -------------------------------------------------------------

# The image input of vision language models, by the names they use, most common first.
IMAGE_KEYS = ("image", "images", "image_input", "input_image", "input_images", "image_url", "image_urls",
              "image_file", "img")


def _is_array(spec: Any) -> bool:
    return isinstance(spec, Mapping) and spec.get("type") == "array"


def _takes_text(spec: Any) -> bool:
    """A string input, an array of strings, or an untyped one (an ``allOf`` reference)."""
    if not isinstance(spec, Mapping):
        return False
    if _is_array(spec):
        items = spec.get("items")
        return not isinstance(items, Mapping) or items.get("type", "string") == "string"
    return spec.get("type", "string") == "string"


def _takes_uri(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    items = spec.get("items")
    return spec.get("format") == "uri" or (isinstance(items, Mapping) and items.get("format") == "uri")


def image_key(properties: Mapping[str, Any]) -> str | None:
    """The input that takes images: a known name, else a URI input named like an image."""
    for key in IMAGE_KEYS:
        if key in properties and _takes_text(properties[key]):
            return key
    return next((key for key, spec in properties.items()
                 if "image" in key.lower() and "mask" not in key.lower() and _takes_uri(spec)), None)


def put_images(result: dict[str, Any], images: Sequence[Any], properties: Mapping[str, Any] | None,
               model: str) -> None:
    """Put ``--image`` attachments under the model's image input: all of them in an array input,
    the one in a single-valued input. Raises InvalidRequestError when they have no place."""
    if not images:
        return
    if properties is None:
        raise InvalidRequestError(
            f"{model} has no input schema, so which input takes --image cannot be told; nothing was sent. "
            "Next: name the input yourself, -i KEY=@PATH.")
    key = image_key(properties)
    if key is None:
        raise InvalidRequestError(
            f"{model} takes no image: its schema declares no image input; nothing was sent. "
            "Next: use a vision model (such as yorickvp/llava-13b), or leave out --image.")
    if _is_array(properties[key]):
        result[key] = list(images)
    elif len(images) > 1:
        raise InvalidRequestError(
            f"{model} takes one image (its input {key}), and {len(images)} were given; nothing was sent. "
            "Next: pass one --image.")
    else:
        result[key] = images[0]


def as_references(inputs: Mapping[str, Any], properties: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """``inputs`` with each Attachment written as its reference, and the keys not sent.

    A file for a key the schema does not declare is not sent (nor uploaded): it is named in
    the list, as a setting the model does not take. A single file for an array input becomes
    a list of one. Without a schema (``properties`` None), files go where they were asked.
    """
    placed: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in inputs.items():
        if isinstance(value, FileSource):
            raise InvalidRequestError(f"{key}={value}: the file was never read (a bug: load_files was not called)")
        if not attachments_in(value):
            placed[key] = value
            continue
        spec = None if properties is None else properties.get(key)
        if properties is not None and spec is None:
            dropped.append(f"{key} (a file)")
            continue
        if isinstance(value, Attachment) and _is_array(spec):
            value = [value]
        placed[key] = _referenced(value)
    return placed, dropped


def _referenced(value: Any) -> Any:
    if isinstance(value, Attachment):
        return value.reference()
    if isinstance(value, (list, tuple)):
        return [_referenced(item) for item in value]
    return value
