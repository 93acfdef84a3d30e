"""Files the emulator keeps: uploads to the Files API and model outputs on the file host.

Both stores are bounded in bytes (the newest stay) and forget files once they expire, as
Replicate does: output URLs stop working after an hour (predictions.get in its OpenAPI document:
"All input parameters, output values, and logs are automatically removed after an hour"), uploads
expire a day after creation (``expires_at`` in replicate-python tests/cassettes/file-operations.yaml).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StoredFile", "FileStore", "new_file_id", "DEFAULT_MAX_FILE_BYTES"]

DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024  # per store: ten uploads at the 100 MiB limit


def new_file_id() -> str:
    """A Files API id as recorded: base64 of a UUID's text (file-operations.yaml, 2024-08).
    (Newer documentation shows 26-character base32 ids; clients must treat ids as opaque.)"""
    return base64.urlsafe_b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")


@dataclass(eq=False)
class StoredFile:
    """One file. `key` is its Files API id or its path on the file host.

    `drop_after` / `stall_after` (bytes) make downloads end or stall part-way: the first
    download only, or every one with `every_download`; `delay` (seconds) holds back the body
    of every download. `downloads` counts the GETs served.
    """

    key: str
    name: str
    content_type: str
    data: bytes = field(repr=False)
    lifetime: float
    metadata: Any = field(default_factory=dict)
    created_ns: int = field(default_factory=time.time_ns)
    drop_after: int | None = None
    stall_after: int | None = None
    every_download: bool = False
    delay: float = 0.0
    downloads: int = 0
    sha256: str = field(init=False)
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.md5 = hashlib.md5(self.data, usedforsecurity=False).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def expires_ns(self) -> int:
        return self.created_ns + int(self.lifetime * 1e9)

    def expired(self, now_ns: int | None = None) -> bool:
        return (now_ns if now_ns is not None else time.time_ns()) >= self.expires_ns


class FileStore:
    """Files by key, oldest first, at most `max_bytes` of them in all (the newest always stays)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._lock = threading.Lock()  # tests look from their own thread
        self._bytes = 0
        self.in_flight = 0  # downloads being served now (the file host counts them)
        self.peak_in_flight = 0  # the most at once; a benchmark sets it back to 0

    def add(self, stored: StoredFile) -> None:
        with self._lock:
            self._drop(stored.key)
            self._files[stored.key] = stored
            self._bytes += stored.size
            while self._bytes > self.max_bytes and len(self._files) > 1:
                self._drop(next(iter(self._files)))

    def get(self, key: str) -> StoredFile | None:
        """The file, or None when unknown or expired (an expired file is forgotten)."""
        with self._lock:
            stored = self._files.get(key)
            if stored is not None and stored.expired():
                self._drop(key)
                return None
            return stored

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._bytes = 0

    def live(self) -> list[StoredFile]:
        """The files not yet expired, newest first."""
        with self._lock:
            for key in [k for k, f in self._files.items() if f.expired()]:
                self._drop(key)
            return list(reversed(self._files.values()))

    def __len__(self) -> int:
        return len(self.live())

    def _drop(self, key: str) -> bool:
        stored = self._files.pop(key, None)
        if stored is None:
            return False
        self._bytes -= stored.size
        return True
