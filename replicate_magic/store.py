"""The local log: every exchange in one SQLite file, for replay, restore and a look back. I/O.

One file: the ``path`` given, else ``REPLICATE_MAGIC_DB``, else ``log.db`` in the user's data
directory. Mode 0600, WAL journal and a busy timeout, so several kernels write at once. The
API token is never written: every text and JSON value is scrubbed of it first. A ``LogStore``
touches the disk on its first call, not when it is made (``%load_ext`` stays cheap).

Text search (``recent(search=...)``) goes through an FTS5 index with the ``trigram`` tokenizer
over prompt and reply where this SQLite has one (3.34 and later, built with FTS5), and scans
every row where it has not, or for searches shorter than three characters.

Every failure is one ``StoreError`` line (a foreign or corrupt file, a read-only place, a full
disk, a lock held too long, a log from a newer version); the caller shows it as a warning,
and a reply never depends on the log. The file's layout and its migrations are in
``store_layout``; the ``Exchange`` value and how it goes in and out of a row in ``store_rows``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .pricing import Entry
from .store_layout import (  # the file's layout, opening and migrating it
    _FEW,
    _INDEX_BEHIND,
    _INDEX_NEW,
    _INSERT,
    _SELECT,
    _SINCE_RESET,
    _TEXT_TABLE,
    _WINDOW,
    _WINDOW_START,
    SCHEMA_VERSION,
    StoreError,
    _create_private,
    _foreign,
    _migrate,
    _os_problem,
    _text_index_ready,
    _tighten,
    _transaction,
    _use_wal,
    _version,
)
from .store_rows import (  # the rows: the Exchange value, in and out of SQL
    STATUSES,
    Exchange,
    _contains,
    _digest,
    _exchange,
    _filters,
    _indexable,
    _json_of,
    _latest_per_cell,
    _loads,
    _model_totals,
    _row,
    _Scrubber,
    canonical_json,
    utc_now,
)

__all__ = ["SCHEMA_VERSION", "STATUSES", "Exchange", "LogStore", "StoreError", "canonical_json", "default_path"]

BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write to finish


def default_path() -> Path:
    """``REPLICATE_MAGIC_DB``, else ``log.db`` in the user's data directory. Touches no disk."""
    configured = os.environ.get("REPLICATE_MAGIC_DB", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    from platformdirs import user_data_dir  # imported on first use: loading the extension stays cheap

    return Path(user_data_dir("replicate_magic", appauthor=False)) / "log.db"


class LogStore:
    """The log in one SQLite file; safe to share between the kernel thread and the loop thread."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = BUSY_TIMEOUT) -> None:
        self._given = path
        self._path: Path | None = None
        self._timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._indexed = False  # the connection's file has a text index this SQLite can use
        self._pid = 0
        self._inherited: list[sqlite3.Connection] = []
        # One connection, used under one lock by every thread. The kernel thread and the loop
        # thread log a few rows a minute, so they hardly ever wait for each other, and the file is
        # opened, checked and migrated once (a connection per thread would do all that per thread,
        # and leave connections open when threads end).
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """Where the log lives (worked out on first use; nothing is created until a call needs it)."""
        if self._path is None:
            given = self._given
            self._path = Path(given).expanduser().absolute() if given is not None else default_path()
        return self._path

    def __repr__(self) -> str:
        return f"<LogStore {self.path}>"

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- writing -------------------------------------------------------------------------------

    def record(self, exchange: Exchange) -> int:
        """Log one exchange (scrubbed of the token); returns its row id."""
        return self.record_many([exchange])[0]

    def record_many(self, exchanges: Sequence[Exchange]) -> list[int]:
        """Log several exchanges in one transaction (a batch's, a fraction of the cost of one
        each: the commit and the text index's update are paid once); their row ids."""
        scrub = _Scrubber.now()
        rows = [_row(exchange, scrub) for exchange in exchanges]
        with self._session() as db, _transaction(db):  # the rows and their text index entries, together
            ids = [int(db.execute(_INSERT, row).lastrowid or 0) for row in rows]
            if self._indexed:
                db.execute(_INDEX_NEW)
        return ids

    def save_schema(self, model: str, version: str | None, schema: Mapping[str, Any]) -> None:
        """Keep a model's ``openapi_schema`` (with its version id) for the next kernel."""
        scrub = _Scrubber.now()
        text = _json_of(scrub(dict(schema)), "the schema")
        with self._session() as db:
            db.execute("INSERT OR REPLACE INTO schemas (model, version, schema, saved_at) VALUES (?, ?, ?, ?)",
                       (scrub(model), scrub(version), text, utc_now()))

    # -- prompt templates ------------------------------------------------------------------------

    def save_template(self, name: str, line: str, prompt: str) -> None:
        """Keep the ``%%replicate`` line and prompt ``name`` stands for (scrubbed of the token),
        replacing a template of that name."""
        scrub = _Scrubber.now()
        with self._session() as db:
            db.execute("INSERT OR REPLACE INTO templates (name, line, prompt, saved_at) VALUES (?, ?, ?, ?)",
                       (name, scrub(line), scrub(prompt), utc_now()))

    def template(self, name: str) -> dict[str, str] | None:
        """``{"name", "line", "prompt", "saved_at"}`` of template ``name``, or None."""
        with self._session() as db:
            row = db.execute("SELECT name, line, prompt, saved_at FROM templates WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(zip(("name", "line", "prompt", "saved_at"), row, strict=True))

    def templates(self) -> list[dict[str, str]]:
        """Every template, by name."""
        with self._session() as db:
            rows = db.execute("SELECT name, line, prompt, saved_at FROM templates ORDER BY name").fetchall()
        return [dict(zip(("name", "line", "prompt", "saved_at"), row, strict=True)) for row in rows]

    def delete_template(self, name: str) -> bool:
        """Forget template ``name``; whether there was one."""
        with self._session() as db:
            return db.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount > 0

    # -- reading -------------------------------------------------------------------------------

    # -- output files, by content hash -----------------------------------------------------------

    @property
    def files_dir(self) -> Path:
        """Where output files are kept, by their sha256, next to the log (``log.db.files``)."""
        return self.path.with_name(self.path.name + ".files")

    def keep_file(self, data: bytes, digest: str | None = None) -> str:
        """Keep an output file's bytes (once per content, 0600) for a later replay; its sha256
        (``digest``, when the caller has it already)."""
        digest = digest or hashlib.sha256(data).hexdigest()
        target = self.files_dir / digest
        try:
            if not target.exists():
                self.files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                partial = target.with_name(f".{digest}.{os.getpid()}.part")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(partial, target)  # whole or not at all: a replay never reads half a file
        except OSError as error:
            raise StoreError(_os_problem(error, self.files_dir)) from None
        return digest

    def kept_file(self, digest: str) -> bytes | None:
        """The bytes kept under ``digest``, or None when they are gone (or do not match it)."""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        try:
            data = (self.files_dir / digest).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == digest else None

    def find_replay(self, model: str, input: Mapping[str, Any]) -> Exchange | None:
        """The latest original, succeeded exchange of ``model`` with this input (key order aside).

        Replays are skipped: one is a copy, and the original carries the true date, prediction
        id, metrics and version. Interrupted and failed exchanges never match.
        """
        text = _json_of(_Scrubber.now()(dict(input)), "the input")  # scrubbed as record() does: same hash
        with self._session() as db:
            row = db.execute(f"{_SELECT} WHERE model = ? AND input_hash = ? AND input = ? "
                             "AND status = 'succeeded' AND replayed = 0 ORDER BY time DESC, id DESC LIMIT 1",
                             (model, _digest(text), text)).fetchone()
        return None if row is None else _exchange(row, self.path)

    def recent(self, n: int = 100, model: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
        """The last ``n`` exchanges, newest first; ``search`` matches prompt or reply, any case."""
        if n <= 0:
            return []
        where, params = _filters(model, search)
        newest = " ORDER BY time DESC, id DESC LIMIT ?"
        with self._session() as db:
            if search and _indexable(search) and self._indexed and not db.execute(_INDEX_BEHIND).fetchone()[0]:
                # The index finds the rows that hold the text; the filters above still decide
                # (LIKE or casefold, exactly as the scan does), the index only spares reading the rest.
                phrase = '"' + search.replace('"', '""') + '"'
                found = db.execute(f"SELECT rowid FROM {_TEXT_TABLE} WHERE {_TEXT_TABLE} MATCH ? LIMIT ?",
                                   (phrase, _FEW + 1)).fetchall()
                if len(found) <= _FEW:  # few: read those rows and sort them
                    ids = json.dumps([rowid for (rowid,) in found])
                    sql = f"{_SELECT}{where} AND id IN (SELECT value FROM json_each(?)){newest}"
                    rows = db.execute(sql, (*params, ids, n)).fetchall()
                else:  # many: the newest rows alone may hold n of them (then they are the answer)
                    sql = f"{_SELECT}{where} AND time >= ({_WINDOW_START}){newest}"
                    rows = db.execute(sql, (*params, _WINDOW, n)).fetchall()
                    if len(rows) < n:  # else walk the rows newest first, stop at the n-th that holds it
                        sql = (f"{_SELECT}{where} AND +id IN (SELECT rowid FROM {_TEXT_TABLE} "
                               f"WHERE {_TEXT_TABLE} MATCH ?){newest}")
                        rows = db.execute(sql, (*params, phrase, n)).fetchall()
            else:
                rows = db.execute(f"{_SELECT}{where}{newest}", (*params, n)).fetchall()
        return [dataclasses.asdict(_exchange(row, self.path)) for row in rows]

    def conversation(self, name: str) -> list[Exchange]:
        """The turns of chat ``name`` to restore, in order, as the kernel's history keeps them.

        Only succeeded exchanges (replays included: they were turns too). A cell that ran more
        than once counts once, at the place it first ran, with its latest reply.
        """
        with self._session() as db:
            rows = db.execute(f"{_SELECT} WHERE chat = ? AND status = 'succeeded' AND {_SINCE_RESET} "
                              "ORDER BY time, id", (name,)).fetchall()
        return _latest_per_cell(_exchange(row, self.path) for row in rows)

    def record_reset(self, chat: str) -> None:
        """Mark that conversation ``chat`` was emptied now: a later restore starts after this."""
        self.record(Exchange(chat=chat, model="", input={}, reply="", status="reset"))

    def saved_conversations(self) -> list[dict[str, Any]]:
        """Each chat that can be restored: ``name``, ``turns`` (as restored) and ``last`` time."""
        with self._session() as db:
            rows = db.execute(
                "SELECT chat, COUNT(DISTINCT cell_id) + SUM(cell_id IS NULL), MAX(time) FROM exchanges "
                f"WHERE status = 'succeeded' AND {_SINCE_RESET} GROUP BY chat ORDER BY MAX(time) DESC").fetchall()
        return [{"name": chat, "turns": turns, "last": last} for chat, turns, last in rows]

    def summary(self, overrides: Mapping[str, Entry] | None = None) -> list[dict[str, Any]]:
        """Per model: exchanges, replays, tokens, predict seconds and estimated cost of new predictions.

        Replays cost nothing and add no tokens. ``cost`` is None when the model has no price or
        no exchange reported the metrics its price needs.
        """
        with self._session() as db:
            rows = db.execute(
                "SELECT model, COUNT(*), SUM(replayed), "
                "SUM(CASE WHEN replayed = 0 THEN json_extract(metrics, '$.input_token_count') END), "
                "SUM(CASE WHEN replayed = 0 THEN json_extract(metrics, '$.output_token_count') END), "
                "SUM(CASE WHEN replayed = 0 THEN json_extract(metrics, '$.predict_time') END) "
                "FROM exchanges WHERE status != 'reset' GROUP BY model ORDER BY model").fetchall()
        return [_model_totals(row, overrides) for row in rows]

    def load_schema(self, model: str) -> tuple[str | None, dict[str, Any], str] | None:
        """``(version, schema, saved_at)`` kept by ``save_schema``, or None."""
        with self._session() as db:
            row = db.execute("SELECT version, schema, saved_at FROM schemas WHERE model = ?", (model,)).fetchone()
        if row is None:
            return None
        version, text, saved_at = row
        schema = _loads(text, f"the schema of {model}", self.path)
        if not isinstance(schema, dict):
            raise StoreError(f"The log at {self.path} holds a damaged schema for {model}; it is ignored")
        return version, schema, saved_at

    # -- the connection --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; any failure leaves as one StoreError line."""
        with self._lock:
            try:
                yield self._connection()
            except StoreError:
                self._drop()
                raise
            except (sqlite3.Error, OSError) as exc:
                self._drop()  # reopened, and checked again, on the next call
                raise StoreError(self._describe(exc)) from None

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None and self._pid != os.getpid():
            # Forked: the parent's connection must not be used here, nor closed (closing could
            # checkpoint and delete the parent's WAL). Keep it referenced and open a new one.
            self._inherited.append(self._db)
            self._db = None
        if self._db is None:
            self._db = self._open()
            self._pid = os.getpid()
        return self._db

    def _open(self) -> sqlite3.Connection:
        path = self.path
        _create_private(path)
        db = sqlite3.connect(path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            _version(db, path)  # first: a foreign database must not even be switched to WAL
            _use_wal(db, self._timeout)
            # NORMAL syncs at checkpoints only: a power cut may lose the last exchanges, never the file.
            db.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, path)
            self._indexed = _text_index_ready(db)
            db.create_function("rm_contains", 2, _contains, deterministic=True)
            _tighten(path)
        except BaseException:
            db.close()
            raise
        return db

    def _drop(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    def _describe(self, exc: sqlite3.Error | OSError) -> str:
        """One line for a failure: what happened to the log and what to do."""
        path = self.path
        if isinstance(exc, OSError):
            return _os_problem(exc, path)
        code = getattr(exc, "sqlite_errorname", "")  # Python 3.11+; the message is the fallback
        text = str(exc)
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
            return f"The log at {path} stayed locked by another process for more than {self._timeout:g} s; try again"
        if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text \
                or "malformed" in text:
            return _foreign(path, text)
        if code.startswith("SQLITE_FULL") or "full" in text:
            return f"The log at {path} cannot grow: the disk is full; free some space or set REPLICATE_MAGIC_DB"
        if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in text \
                or "unable to open" in text:
            return f"The log at {path} cannot be written ({text}); make it writable or set REPLICATE_MAGIC_DB"
        return f"The log at {path} failed: {text}"
