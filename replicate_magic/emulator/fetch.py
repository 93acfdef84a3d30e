"""What a model "downloads" for a ``format: uri`` input: the bytes of a data URI, of a Files API
upload, or of a file on the emulator's file host, looked up in-process (the emulator is offline).

Any other URL fails the prediction, as an unreachable input fails a real model run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit

from . import images
from .schema import EmulatedModel
from .state import EmulatorState

__all__ = ["fetch", "describe", "image_inputs", "image_notes", "check_inputs"]

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _data_uri(uri: str) -> tuple[bytes, str]:
    header, comma, payload = uri[len("data:"):].partition(",")
    if not comma:
        raise ValueError("could not read the data URI: it has no comma")
    params = header.split(";")
    content_type = params[0].strip().lower() or "text/plain"
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            return base64.b64decode(payload, validate=True), content_type
        except (binascii.Error, ValueError):
            raise ValueError("could not read the data URI: its base64 is not valid") from None
    return unquote_to_bytes(payload), content_type


def _same_server(parts: SplitResult, base: str) -> bool:
    if not base:
        return False
    ours = urlsplit(base)
    return parts.port == ours.port and (parts.hostname in _LOOPBACK or parts.hostname == ours.hostname)


def fetch(url: str, state: EmulatorState) -> tuple[bytes, str]:
    """(bytes, content type) behind `url`; ValueError saying why not."""
    if url.startswith("data:"):
        return _data_uri(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        raise ValueError(f"could not download {url!r}: not a URL") from None
    stored = None
    if _same_server(parts, state.file_base):
        stored = state.outputs.get(parts.path)
    elif _same_server(parts, state.base_url) and parts.path.startswith("/v1/files/"):
        stored = state.uploads.get(parts.path[len("/v1/files/"):].rstrip("/"))
    elif parts.scheme in ("http", "https"):
        raise ValueError(f"could not download {url}: the emulator is offline and fetches only its own "
                         "files and data URIs")
    else:
        raise ValueError(f"could not download {url!r}: not a URL")
    if stored is None:
        raise ValueError(f"could not download {url}: 404 Not Found")
    return stored.data, stored.content_type


def describe(data: bytes, content_type: str) -> str:
    """What the emulated model says it saw: size, type, hash, and pixels when it can tell."""
    kind = content_type if content_type and content_type != "application/octet-stream" else None
    kind = kind or images.sniff(data) or "application/octet-stream"
    text = f"{len(data)} bytes, type {kind}, sha256 {hashlib.sha256(data).hexdigest()}"
    size = images.dimensions(data)
    return text + (f", {size[0]}x{size[1]} pixels" if size else "")


def image_inputs(model: EmulatedModel, input: dict[str, Any], images_only: bool = True) -> list[str]:
    """The URLs in `input`: every ``format: uri`` input (or list of them), or only those named like
    an image."""
    found: list[str] = []
    for name, spec in model.properties.items():
        is_uri = spec.get("format") == "uri" or spec.get("items", {}).get("format") == "uri"
        if not is_uri or (images_only and "image" not in name) or name not in input:
            continue
        value = input[name]
        found += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
    return found


def image_notes(model: EmulatedModel, input: dict[str, Any], state: EmulatorState) -> str:
    """One sentence per image received ("" for none); ValueError when one cannot be fetched."""
    urls = image_inputs(model, input)
    notes = [f"I received an image of {describe(*fetch(url, state))}." for url in urls]
    return " ".join(notes)


def check_inputs(model: EmulatedModel, input: dict[str, Any], state: EmulatorState) -> None:
    """Fetch every file input (sdxl's image and mask, musicgen's input_audio): ValueError if one fails."""
    for url in image_inputs(model, input, images_only=False):
        fetch(url, state)
