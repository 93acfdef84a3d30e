"""Files sent *in*: read them when the request is made, send them just before the prediction. I/O.

``load_files`` turns each ``attachments.FileSource`` of a request (``-i KEY=@PATH``,
``-i KEY=@{name}``, ``--image``) into an ``Attachment``: a file is read from disk, a
variable is taken from the notebook's namespace (bytes, a path, or a PIL image, encoded as
PNG). Every refusal is one line that says which flag and what to do, raised before anything
is sent. ``sendable`` is the one place references become what Replicate receives (see
``attachments``): ``data:`` URIs while they stay under ``DATA_URI_LIMIT`` together, else an
upload to the Files API, made once per (API, content) in this process while it is far from
expiring.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from .attachments import (
    DATA_URI_LIMIT,
    MAX_FILE_SIZE,
    Attachment,
    FileSource,
    name_for,
    reference_hash,
    size_text,
)
from .client import ReplicateClient
from .errors import InvalidRequestError, ResponseError
from .inputs import Settings

__all__ = ["forget_uploads", "load_files", "read_file", "sendable"]

# An upload is used again until this close to its expiry (a day after it was made): a prediction
# fetches its inputs when it starts, which a queue or a cold start can put off for many minutes.
_EXPIRY_MARGIN = 3600.0
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\]')  # would break the multipart header it goes in
_MAX_NAME_BYTES = 255  # what the Files API takes for a filename


# -- reading ------------------------------------------------------------------------------------


def load_files(settings: Settings, namespace: Mapping[str, Any] | None) -> Settings:
    """``settings`` with every ``FileSource`` read into an ``Attachment``; ``namespace`` holds the
    notebook's variables (None outside a notebook: then ``@{name}`` is refused)."""
    if not any(isinstance(v, FileSource) for v in (*settings.extra.values(), *settings.images)):
        return settings
    extra = {key: _load(value, namespace, f"-i {key}={value}") if isinstance(value, FileSource) else value
             for key, value in settings.extra.items()}
    images = tuple(_load(source, namespace, f"--image {source}") if isinstance(source, FileSource) else source
                   for source in settings.images)
    return replace(settings, extra=extra, images=images)


def _load(source: FileSource, namespace: Mapping[str, Any] | None, flag: str) -> Attachment:
    if source.path is not None:
        return read_file(source.path, flag)
    assert source.variable is not None
    if namespace is None:
        raise InvalidRequestError(
            f"{flag}: variables exist only in a notebook; nothing was sent. Next: name a file, @PATH.")
    if source.variable not in namespace:
        raise InvalidRequestError(
            f"{flag}: there is no variable {source.variable}; nothing was sent. Next: define it, or check the name.")
    return _of_value(namespace[source.variable], source.variable, flag)


def _of_value(value: Any, name: str, flag: str) -> Attachment:
    """A variable's value as a file: bytes as they are, a path's file, a PIL image as PNG."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _check_size(len(data), name, flag)
        return Attachment.of(data, name_for(name, data))
    if isinstance(value, (str, PurePath)):
        return read_file(str(value), flag)
    if type(value).__module__.startswith("PIL.") and callable(getattr(value, "save", None)):
        return Attachment.of(_png(value, name, flag), f"{name}.png", "image/png")
    raise InvalidRequestError(
        f"{flag}: {name} is a {type(value).__name__}; nothing was sent. Next: give bytes, a path "
        "(str or pathlib.Path) or a PIL image.")


def _png(image: Any, name: str, flag: str) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")  # the image's own method: PIL is never imported here
    except Exception as error:  # PIL raises OSError, ValueError, KeyError... by image mode
        raise InvalidRequestError(f"{flag}: {name} could not be written as PNG ({error}); nothing was sent.") from None
    _check_size(buffer.tell(), name, flag)
    return buffer.getvalue()


def read_file(path: str, flag: str) -> Attachment:
    """The file at ``path`` (``~`` expanded; relative to the working directory), checked first."""
    where = Path(path).expanduser()
    try:
        info = os.stat(where)  # before opening: opening a FIFO waits for a writer
        if stat.S_ISDIR(info.st_mode):
            raise InvalidRequestError(f"{flag}: {path} is a directory, not a file; nothing was sent.")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would be read forever
            raise InvalidRequestError(f"{flag}: {path} is not a regular file; nothing was sent.")
        _check_size(info.st_size, path, flag)
        with open(where, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)  # it may have grown since
    except FileNotFoundError:
        raise InvalidRequestError(
            f"{flag}: no file {path} (looked in {where.absolute().parent}); nothing was sent. "
            "Next: check the path.") from None
    except PermissionError:
        raise InvalidRequestError(f"{flag}: {path} cannot be read (permission denied); nothing was sent.") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise InvalidRequestError(f"{flag}: {path} cannot be read ({reason}); nothing was sent.") from None
    _check_size(len(data), path, flag)
    return Attachment.of(data, where.name)


def _check_size(size: int, what: str, flag: str) -> None:
    if size > MAX_FILE_SIZE:
        raise InvalidRequestError(
            f"{flag}: {what} is {size:,} bytes, over the {size_text(MAX_FILE_SIZE)} Replicate takes for a file; "
            "nothing was sent. Next: make it smaller, or put it online and pass its URL (-i KEY=https://...).")


# -- sending ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upload:
    url: str
    expires: float | None  # epoch seconds, when Replicate said


_uploads: dict[tuple[str, str], _Upload] = {}  # (API base URL, sha256) -> the upload made for it


def forget_uploads() -> None:
    """Forget the uploads made so far, as a new kernel would (the next use uploads again)."""
    _uploads.clear()


async def sendable(client: ReplicateClient, inputs: dict[str, Any], files: list[Attachment]) -> dict[str, Any]:
    """``inputs`` with each reference to one of ``files`` replaced by what Replicate gets.

    Files go as data URIs, in input order, while their URIs together stay under
    ``DATA_URI_LIMIT`` characters (one file of up to about 750 kB); the others are uploaded
    and go as their URLs. Budgeting the URIs, not the files, keeps the create request under
    1 MB whatever the number of files. Other values, among them references to files not
    given (a user's own JSON), are left as they are.
    """
    if not files:
        return inputs
    sender = _Sender(client, {file.sha256: file for file in files})
    return {key: await sender.sent(value) for key, value in inputs.items()}


class _Sender:
    def __init__(self, client: ReplicateClient, by_hash: Mapping[str, Attachment]) -> None:
        self.client = client
        self.by_hash = by_hash
        self.inline_left = DATA_URI_LIMIT  # characters of data URIs this request may still carry

    async def sent(self, value: Any) -> Any:
        if isinstance(value, list):
            return [await self.sent(item) for item in value]
        digest = reference_hash(value)
        if digest is None or digest not in self.by_hash:
            return value
        file = self.by_hash[digest]
        length = _data_uri_length(file)
        if length < self.inline_left:
            self.inline_left -= length
            return file.data_uri()
        return await _uploaded(self.client, file)


def _data_uri_length(file: Attachment) -> int:
    return len(f"data:{file.content_type};base64,") + 4 * -(-file.size // 3)


async def _uploaded(client: ReplicateClient, file: Attachment) -> str:
    """The URL of an upload of ``file``: one made before in this process, else a new one."""
    key = (client.base_url, file.sha256)
    known = _uploads.get(key)
    if known is not None and (known.expires is None or known.expires - time.time() > _EXPIRY_MARGIN):
        return known.url
    try:
        made = await client.upload_file(file.data, _upload_name(file.name), file.content_type)
    except ResponseError as error:
        raise ResponseError(f"Could not upload {file.name} ({size_text(file.size)}); nothing was sent: {error}",
                            status=error.status, title=error.title, detail=error.detail) from None
    urls = made.get("urls")
    url = urls.get("get") if isinstance(urls, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ResponseError(f"Replicate's Files API answered the upload of {file.name} without a file URL "
                            "(urls.get); nothing was sent. Next: try again.")
    _uploads[key] = _Upload(url, _epoch(made.get("expires_at")))
    return url


def _epoch(text: Any) -> float | None:
    """``2024-08-23T12:26:51.079Z`` as epoch seconds; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _upload_name(name: str) -> str:
    """The name as the Files API takes it: no characters that break a header, at most 255 bytes."""
    clean = _UNSAFE_NAME.sub("_", name) or "file"
    if len(clean.encode()) <= _MAX_NAME_BYTES:
        return clean
    suffix = PurePath(clean).suffix[:16]
    return clean.encode()[: _MAX_NAME_BYTES - len(suffix.encode())].decode(errors="ignore") + suffix
