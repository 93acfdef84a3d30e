"""Output files: downloaded once, without any credential, kept as ``FileOutput`` values. I/O.

Replicate serves a file model's outputs from replicate.delivery for an hour. Each file is
downloaded once, right after the prediction ends, concurrently with the others: the bytes
are then shown, saved and handed to ``--out`` from memory (above ``embed_limit`` they go to
disk instead, and the page shows a link). The API token never goes with a download: it is
another host, and the request carries no Authorization at all. Only hosts that serve
Replicate's files are fetched (replicate.delivery over https; the emulator's file host when
the API is the emulator); any other URL a model names is shown, not fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from .environment import is_loopback
from .outputs import FileFacts, facts, human_size, names_in_order, parse_data_uri
from .sessions import shared_session
from .settings import Timeouts

__all__ = ["FILE_DOMAINS", "MAX_DOWNLOAD", "DownloadError", "FileOutput", "fetch_files", "fetchable"]

log = logging.getLogger(__name__)

FILE_DOMAINS = ("replicate.delivery", "replicate.com", "replicate.net")
MAX_DOWNLOAD = 2 * 1024 ** 3  # beyond this a "file" is refused whatever the limit to embed
# One reply embeds at most this much in all (20 images of 4 MB would make a 100 MB output, and
# notebook): the files past it go to disk and are linked, as one over the embed limit is.
MAX_EMBEDDED = 50_000_000
_TRIES = 3
_RETRY_PAUSE = 0.5
_REDIRECTS = 3
_CHUNK = 256 * 1024
_USER_AGENT = "replicate-magic/0.1"


class DownloadError(Exception):
    """One line naming the URL and what happened; the reply's other parts stand."""


@dataclass(eq=False)
class FileOutput:
    """One output file. ``read()`` gives its bytes (downloaded once, when the turn ended),
    ``save(path)`` writes them; shown in a notebook, it displays itself (an image, a player
    or a line with its name, size and type)."""

    url: str
    name: str
    content_type: str = "application/octet-stream"
    size: int = 0
    sha256: str = ""
    pixels: tuple[int, int] | None = None
    path: Path | None = None  # where the bytes are on disk (saved, or too big to keep in memory)
    problem: str | None = None  # why it could not be fetched; then there are no bytes
    note: str | None = None  # what else went wrong with it ("not saved: ..."); the bytes stand
    _data: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, url: str, name: str, data: bytes, path: Path | None = None) -> FileOutput:
        found = facts(data)
        return cls(url, name, found.content_type, found.size, hashlib.sha256(data).hexdigest(), found.pixels,
                   path=path, _data=data)

    @property
    def facts(self) -> FileFacts:
        return FileFacts(self.content_type, self.size, self.pixels)

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def read(self) -> bytes:
        """The file's bytes (from memory, or from the disk copy); never downloaded again."""
        if self._data is not None:
            return self._data
        if self.path is not None:
            return self.path.read_bytes()
        raise DownloadError(self.problem or f"{self.url}: not downloaded")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bytes to ``path`` (a directory: under the file's own name); returns the file."""
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / self.name
        target.write_bytes(self.read())
        return target

    def summary(self) -> str:
        """``out-0.png · 1.2 MB · image/png`` (or why it is missing)."""
        if self.problem:
            return f"{self.name}: {self.problem}"
        return " · ".join([self.name, human_size(self.size), self.content_type, *filter(None, [self.note])])

    def listing(self) -> str:
        """The summary, and where the file was saved when it was: one line of a file list."""
        return self.summary() + (f" · saved to {self.path}" if self.path is not None else "")

    def __repr__(self) -> str:
        return f"FileOutput({self.summary()!r})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from .render import files_html

        return {"text/plain": repr(self), "text/html": files_html([self])}


def fetchable(url: str, api_base: str) -> bool:
    """Whether a download may go to ``url``: https to a host of Replicate's files, the API's
    own https host, or (for an API on this machine, the emulator) plain http on loopback."""
    parts, api = urlsplit(url), urlsplit(api_base)
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.username is not None or parts.password is not None:
        return False
    if parts.scheme == "https":
        return host == api.hostname or any(host == d or host.endswith("." + d) for d in FILE_DOMAINS)
    return parts.scheme == "http" and api.scheme == "http" and is_loopback(api.hostname) and is_loopback(host)


async def fetch_files(urls: Sequence[str], *, api_base: str, timeouts: Timeouts, embed_limit: int,
                      save_dir: Path | None = None, prefix: str = "") -> list[FileOutput]:
    """Every URL's file, in order, fetched concurrently; a failure is that file's ``problem``.

    Files up to ``embed_limit`` bytes stay in memory; larger ones are written to ``save_dir``
    (else a temporary directory). With ``save_dir``, every file is also written there as
    ``<prefix><name>``, so a re-run of the same prediction writes the same names.
    """
    urls = list(urls)
    first = await asyncio.gather(*(_bytes_or_problem(url, api_base, timeouts, embed_limit) for url in urls))
    # The bytes are sniffed once, here; the names follow the types they give.
    files = [FileOutput(url, "", problem=data) if isinstance(data, str) else FileOutput.of(url, "", data)
             for url, (data, _) in zip(urls, first, strict=True)]
    names = names_in_order(urls, [None if item.problem else item.content_type for item in files])
    embedded = 0
    for item, name, (data, spilled) in zip(files, names, first, strict=True):
        item.name = name
        if isinstance(data, str):
            continue
        spilled = spilled or embedded + len(data) > MAX_EMBEDDED
        embedded += 0 if spilled else len(data)
        try:
            if save_dir is not None:
                item.path = item.save(_writable(save_dir) / f"{prefix}{name}")
            elif spilled:
                item.path = item.save(Path(tempfile.mkdtemp(prefix="replicate-magic-")) / name)
        except OSError as error:  # the file stands, in memory; only the copy on disk is missing
            where = save_dir if save_dir is not None else Path(tempfile.gettempdir())
            item.note = f"not saved: cannot write to {where} ({error.strerror or error})"
            spilled = False
        if spilled:
            item._data = None  # too big to keep in the kernel's memory: read() reads the disk copy
    return files


def _writable(directory: Path) -> Path:
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def _bytes_or_problem(url: str, api_base: str, timeouts: Timeouts, embed_limit: int) -> tuple[bytes | str, bool]:
    """(bytes, over the embed limit) or (the one-line problem, False)."""
    inline = parse_data_uri(url)
    if inline is not None:
        return inline[1], len(inline[1]) > embed_limit
    if url[:5].lower() == "data:":
        return "a data: URI that is not valid base64; not shown", False
    if not fetchable(url, api_base):
        return f"not fetched: {_where(url)} is not a host of Replicate's files", False
    try:
        data = await _download(url, api_base, timeouts)
    except DownloadError as error:
        return str(error), False
    return data, len(data) > embed_limit


async def _download(url: str, api_base: str, timeouts: Timeouts) -> bytes:
    """The body, tried up to 3 times on a dropped connection, a stall or a 5xx."""
    problem = ""
    for attempt in range(_TRIES):
        if attempt:
            await asyncio.sleep(_RETRY_PAUSE * attempt)
        try:
            return await _get(url, api_base, timeouts)
        except _Transient as error:
            problem = str(error)
            log.info("download of %s failed (%s); try %d of %d", _where(url), problem, attempt + 1, _TRIES)
    raise DownloadError(f"Could not download {_where(url)} after {_TRIES} tries: {problem}")


class _Transient(Exception):
    pass


async def _get(url: str, api_base: str, timeouts: Timeouts) -> bytes:
    session = await shared_session()
    timeout = aiohttp.ClientTimeout(connect=timeouts.connect, sock_read=timeouts.idle)
    for _ in range(_REDIRECTS + 1):
        try:
            async with session.get(url, headers={"User-Agent": _USER_AGENT}, timeout=timeout,
                                   allow_redirects=False, proxy=None) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    target = urljoin(url, response.headers["Location"])
                    if not fetchable(target, api_base):
                        raise DownloadError(f"{_where(url)} redirects to {_where(target)}, which is not "
                                            "a host of Replicate's files; not followed")
                    url = target
                    continue
                if response.status >= 500 or response.status == 429:
                    raise _Transient(f"HTTP {response.status}")
                if response.status != 200:
                    expired = " (Replicate keeps output files for an hour)" if response.status in (403, 404) else ""
                    raise DownloadError(f"Could not download {_where(url)}: HTTP {response.status}{expired}")
                return await _body(response)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            raise _Transient(f"the connection broke ({type(error).__name__})") from None
        except asyncio.TimeoutError:
            raise _Transient(f"no data for {timeouts.idle:g} s") from None
        except aiohttp.ClientError as error:
            raise DownloadError(f"Could not download {_where(url)}: {type(error).__name__}") from None
    raise DownloadError(f"{_where(url)}: more than {_REDIRECTS} redirects")


async def _body(response: aiohttp.ClientResponse) -> bytes:
    declared = response.content_length
    if declared is not None and declared > MAX_DOWNLOAD:
        raise DownloadError(f"{_where(str(response.url))} is {human_size(declared)}, over the "
                            f"{human_size(MAX_DOWNLOAD)} a download may be")
    parts: list[bytes] = []
    received = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        received += len(chunk)
        if received > MAX_DOWNLOAD:
            raise DownloadError(f"{_where(str(response.url))} sent more than {human_size(MAX_DOWNLOAD)}; stopped")
        parts.append(chunk)
    if declared is not None and received != declared:
        raise _Transient(f"got {received} of {declared} bytes")
    return b"".join(parts)


def _where(url: str) -> str:
    """The URL without its query (signed URLs carry credentials of their own there), shortened."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url
    return shown if len(shown) <= 120 else shown[:117] + "…"
