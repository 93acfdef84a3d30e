"""The local log as a chat turn uses it: find a reply to replay, record what happened. I/O.

A ``TurnLog`` wraps a ``store.LogStore`` for one API (base URL). The log never decides a
reply: any ``StoreError`` becomes one line in ``problems`` (shown as a warning under the
reply) and the turn goes on as if there were no log. Schemas fetched from Replicate are kept
in the log too, so a fresh kernel can find a replay, or build its first request, without
asking for the schema again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .environment import DEFAULT_BASE_URL
from .files import FileOutput
from .inputs import ModelRef, Settings
from .schemas import SCHEMA_TTL, ModelSchema, SchemaCache
from .store import Exchange, LogStore, StoreError, default_path
from .streaming import input_for

__all__ = ["LogGroup", "Replay", "TurnLog", "shared_log"]

GROUP_INTERVAL = 0.5  # seconds a batch's finished exchanges may wait to be written together


@dataclass(frozen=True)
class Replay:
    """A logged reply that answers this request, and the input it was found by."""

    exchange: Exchange
    inputs: dict[str, Any]
    ignored: list[str]
    adjusted: list[str]
    files: list[FileOutput] | None = None  # a file model's outputs, from the bytes the log kept

    @property
    def when(self) -> str:
        """When the logged reply was made, for the marker: "2026-12-01 16:22 UTC"."""
        try:
            moment = datetime.fromisoformat(str(self.exchange.time))
        except ValueError:
            return str(self.exchange.time)
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


_open_logs: dict[Path, LogStore] = {}  # one store (one connection) per file in a process
_open_lock = threading.Lock()


def shared_log(path: str = "") -> LogStore:
    """The process's store for ``path`` (empty: ``REPLICATE_MAGIC_DB``, else the default file),
    so the magic, the panel and ``replicate_magic.log()`` share one connection to a file."""
    where = Path(path).expanduser().absolute() if path.strip() else default_path()
    with _open_lock:
        if where not in _open_logs:
            _open_logs[where] = LogStore(where)
        return _open_logs[where]


class LogGroup:
    """The exchanges of many turns at once (a batch), written together: in one transaction at
    most every ``interval`` seconds while they come, and at once by ``flush()``, which the
    batch calls as it ends, interrupted or not. Used on one event loop."""

    def __init__(self, store: LogStore, interval: float = GROUP_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._failed: dict[str, int] = {}  # each failure of the log: how many exchanges it cost
        self._pending: list[Exchange] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, exchange: Exchange) -> None:
        self._pending.append(exchange)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self.store.record_many(pending)
        except StoreError as error:
            self._failed[str(error)] = self._failed.get(str(error), 0) + len(pending)

    @property
    def problems(self) -> list[str]:
        """One line for each way the log failed: ``3 not logged: the disk is full``."""
        return [f"{count} not logged: {error}" for error, count in self._failed.items()]


class TurnLog:
    def __init__(self, store: LogStore, schemas: SchemaCache, base_url: str, group: LogGroup | None = None) -> None:
        self.store = store
        self.schemas = schemas
        self.base_url = base_url
        self.group = group  # a batch's: exchanges are written with the others
        self.problems: list[str] = []  # one line per failure of the log, for the caller to show

    def logged_model(self, model: str) -> str:
        """The model as logged: another API's replies (the emulator's) never replay as Replicate's."""
        return model if self.base_url == DEFAULT_BASE_URL else f"{model} @ {self.base_url}"

    def find(self, ref: ModelRef, model: str, messages: Sequence[Mapping[str, Any]], settings: Settings,
             schema: ModelSchema | None) -> Replay | None:
        """The logged reply for the exact input these messages and settings make with ``schema``
        (None for a bare version id, whose keys are guessed), if any."""
        inputs, ignored, adjusted = input_for(ref, messages, settings, schema)
        try:
            found = self.store.find_replay(self.logged_model(model), inputs)
        except StoreError as error:
            self.problems.append(f"the log could not be read: {error}")
            return None
        if found is None:
            return None
        files = self.kept_files(found) if found.files else None
        if found.files and files is None:
            return None  # its files are gone from the log's store: ask again rather than show less
        return Replay(found, inputs, ignored, adjusted, files)

    def known_schema(self, ref: ModelRef) -> ModelSchema | None:
        """The schema in memory (however old), else the one in the log, put in memory with its age."""
        key = (self.base_url, str(ref))
        schema = self.schemas.last_known(key)
        if schema is not None:
            return schema
        try:
            saved = self.store.load_schema(self.logged_model(str(ref)))
        except StoreError as error:
            self.problems.append(f"the log could not be read: {error}")
            return None
        if saved is None:
            return None
        version, data, saved_at = saved
        schema = ModelSchema(data.get("properties"), data.get("output", "other"), version, data.get("hardware"))
        self.schemas.put(key, schema, age=_age(saved_at))
        return schema

    def save_schema(self, ref: ModelRef, schema: ModelSchema | None) -> None:
        if schema is None or ref.slug is None:
            return
        try:
            self.store.save_schema(self.logged_model(str(ref)), schema.version or ref.version,
                                   {"properties": schema.properties, "output": schema.output,
                                    "hardware": schema.hardware})
        except StoreError as error:
            self.problems.append(f"not logged: {error}")

    def keep_files(self, files: Sequence[FileOutput], one_file: bool = False) -> list[dict[str, Any]]:
        """The files as logged (URL, name, type, size, sha256), their bytes kept for a replay
        where they are in memory (a file over the embed limit is logged, not kept).
        ``one_file``: the output was one file, not a list of them (as ``--out`` gives it)."""
        logged = []
        for item in files:
            entry: dict[str, Any] = {"url": item.url, "name": item.name, "content_type": item.content_type,
                                     "size": item.size, "sha256": item.sha256 or None}
            if item.problem:
                entry["problem"] = item.problem
            elif item.in_memory:
                try:
                    self.store.keep_file(item.read(), item.sha256 or None)
                    entry["kept"] = True
                except StoreError as error:
                    self.problems.append(f"file not kept for a replay: {error}")
            logged.append(entry)
        if one_file and logged:
            logged[0]["one_file"] = True
        return logged

    def kept_files(self, exchange: Exchange) -> list[FileOutput] | None:
        """The logged exchange's files rebuilt from the bytes kept; None when any is gone."""
        rebuilt = []
        for entry in exchange.files:
            data = self.store.kept_file(str(entry.get("sha256") or "")) if entry.get("kept") else None
            if data is None:
                return None
            rebuilt.append(FileOutput.of(str(entry.get("url", "")), str(entry.get("name", "output")), data))
        return rebuilt

    def record(self, exchange: Exchange) -> None:
        if self.group is not None:
            self.group.add(exchange)
            return
        try:
            self.store.record(exchange)
        except StoreError as error:
            self.problems.append(f"not logged: {error}")


def _age(saved_at: str) -> float:
    """Seconds since a saved time; an unreadable one counts as old (fetched again when online)."""
    try:
        saved = datetime.fromisoformat(saved_at)
    except ValueError:
        return SCHEMA_TTL
    if saved.tzinfo is None:
        saved = saved.replace(tzinfo=timezone.utc)
    return max(0.0, time.time() - saved.timestamp())
