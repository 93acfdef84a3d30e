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
and a reply never depends on the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .environment import find_token
from .errors import ReplicateMagicError
from .pricing import Entry, estimate

__all__ = ["STATUSES", "Exchange", "LogStore", "StoreError", "canonical_json", "default_path"]

# "reset": not an exchange but a mark that the conversation was emptied there (restore starts after it).
STATUSES = ("succeeded", "interrupted", "failed", "reset")
REDACTED = "[REDACTED]"
BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write to finish
APPLICATION_ID = 0x524D4C47  # "RMLG" in the file header: this file is a replicate_magic log


class StoreError(ReplicateMagicError):
    """The log could not be read or written; one line that says why and what to do."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exchange:
    """One exchange with a model, as logged. ``input`` is exactly what was sent, except that a
    local file is its short reference (``attachments``), not its data URI or upload URL."""

    time: str | float = dataclasses.field(default_factory=utc_now)  # UTC ISO 8601 (or epoch seconds in)
    chat: str = "default"
    prompt: str = ""
    system: str | None = None
    model: str
    version: str | None = None
    input: dict[str, Any]
    reply: str
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # reserved for file outputs
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    prediction_id: str | None = None
    status: str = "succeeded"
    cell_id: str | None = None
    notebook: str | None = None
    replayed: bool = False  # shown from the log, not a new prediction
    id: int | None = None


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, Unicode kept. Replay compares these."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def default_path() -> Path:
    """``REPLICATE_MAGIC_DB``, else ``log.db`` in the user's data directory. Touches no disk."""
    configured = os.environ.get("REPLICATE_MAGIC_DB", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    from platformdirs import user_data_dir  # imported on first use: loading the extension stays cheap

    return Path(user_data_dir("replicate_magic", appauthor=False)) / "log.db"


# -- the layout, one step per version ------------------------------------------------------------

# A file at version N has had steps 1..N applied; PRAGMA user_version holds N. Add a step at the
# end, never edit one: older files are brought up to date by running the steps they miss. A step
# is its statements, or a function of the connection (run inside the same transaction).
_Step = tuple[str, ...] | Callable[[sqlite3.Connection], None]
_MIGRATIONS: tuple[_Step, ...] = (
    (  # 1: the exchanges, indexed for replay, the recent list by time or model, and restoring a chat
        """CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            chat TEXT NOT NULL,
            prompt TEXT NOT NULL,
            system TEXT,
            model TEXT NOT NULL,
            version TEXT,
            input TEXT NOT NULL,
            input_hash TEXT NOT NULL,
            reply TEXT NOT NULL,
            metrics TEXT NOT NULL DEFAULT '{}',
            prediction_id TEXT,
            status TEXT NOT NULL,
            cell_id TEXT,
            notebook TEXT,
            replayed INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX exchanges_replay ON exchanges (model, input_hash, time)",
        "CREATE INDEX exchanges_time ON exchanges (time)",
        "CREATE INDEX exchanges_chat ON exchanges (chat, time)",
        "CREATE INDEX exchanges_model ON exchanges (model, time)",
    ),
    (  # 2: file references per exchange, and model schemas kept across kernels
        "ALTER TABLE exchanges ADD COLUMN files TEXT NOT NULL DEFAULT '[]'",
        """CREATE TABLE schemas (
            model TEXT PRIMARY KEY,
            version TEXT,
            schema TEXT NOT NULL,
            saved_at TEXT NOT NULL
        )""",
    ),
    # 3: the text index (_add_text_index, below: only where this SQLite has FTS5 with trigrams)
    lambda db: _add_text_index(db),
    (  # 4: prompt templates saved by name (%replicate template NAME, %%replicate -T NAME)
        """CREATE TABLE templates (
            name TEXT PRIMARY KEY,
            line TEXT NOT NULL,
            prompt TEXT NOT NULL,
            saved_at TEXT NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# The text index: an FTS5 table over prompt and reply whose content stays in ``exchanges``
# (external content: the text is not stored twice), tokenized into trigrams, so a phrase query
# is a case-insensitive substring search. ``record`` keeps it in step (no triggers: a file
# written here may be opened by a SQLite without FTS5, whose writes a trigger would break);
# every row up to the highest id in its docsize table is indexed, and ``record`` indexes every
# row above that, so rows a SQLite without the index logged are caught up by the next write.
_TEXT_TABLE = "exchanges_text"
_TEXT_INDEX = (f"CREATE VIRTUAL TABLE {_TEXT_TABLE} USING fts5(prompt, reply, content='exchanges', "
               "content_rowid='id', tokenize='trigram', detail=full)")
_INDEX_NEW = (f"INSERT INTO {_TEXT_TABLE} (rowid, prompt, reply) SELECT id, prompt, reply FROM exchanges "
              f"WHERE id > (SELECT coalesce(max(id), 0) FROM {_TEXT_TABLE}_docsize)")
_INDEX_BEHIND = (f"SELECT coalesce((SELECT max(id) FROM exchanges), 0) "
                 f"> coalesce((SELECT max(id) FROM {_TEXT_TABLE}_docsize), 0)")
_TRIGRAMS = 3  # the shortest search the index answers; shorter ones scan
_FEW = 1000  # at most this many rows hold the text: read just those, newest first
_WINDOW = 2000  # more: first look for them among this many newest rows (a common word is there)
_WINDOW_START = "SELECT time FROM exchanges ORDER BY time DESC LIMIT 1 OFFSET ?"

_COLUMNS = ("id", "time", "chat", "prompt", "system", "model", "version", "input", "reply", "files",
            "metrics", "prediction_id", "status", "cell_id", "notebook", "replayed")
# Rows of a chat after its latest reset mark, if any (times are UTC ISO strings: they sort as text).
_SINCE_RESET = ("time > COALESCE((SELECT MAX(r.time) FROM exchanges AS r "
                "WHERE r.chat = exchanges.chat AND r.status = 'reset'), '')")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM exchanges"
_INSERT = (f"INSERT INTO exchanges ({', '.join(_COLUMNS[1:])}, input_hash) "
           f"VALUES ({', '.join(':' + c for c in _COLUMNS[1:])}, :input_hash)")


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
        row = _row(exchange, _Scrubber.now())
        with self._session() as db:
            if not self._indexed:
                cursor = db.execute(_INSERT, row)
            else:
                with _transaction(db):  # the row and its text index entry, together
                    cursor = db.execute(_INSERT, row)
                    db.execute(_INDEX_NEW)
        return int(cursor.lastrowid or 0)

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


# -- opening and migrating -----------------------------------------------------------------------


def _create_private(path: Path) -> None:
    """The directory (0700 when made here) and the file, created 0600 before SQLite opens it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _tighten(path: Path) -> None:
    """The log and its -wal and -shm files readable by their owner only (SQLite copies the
    main file's mode to the others; this also fixes a log someone made wider)."""
    owner = getattr(os, "geteuid", None)  # POSIX only: elsewhere modes mean little, and are left alone
    if owner is None:
        return
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            info = name.stat()
            if info.st_mode & 0o077 and info.st_uid == owner():
                os.chmod(name, 0o600)


def _use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL, so readers and one writer work at once, across processes.

    The switch needs the file to itself and SQLite does not wait for that (the busy timeout is
    not used), so when another kernel opens a new log at the same moment, try again a while.
    Once the file is in WAL mode (it stays so) this returns at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION; refuse a foreign file or a newer layout."""
    if _version(db, path) == SCHEMA_VERSION:
        return
    # IMMEDIATE takes the write lock first, so two kernels opening a new file migrate it once.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db, path)
        for step in _MIGRATIONS[version:]:
            if callable(step):
                step(db)
                continue
            for statement in step:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if version:  # an older file: indexing its rows filled the WAL, give that space back
        _shrink_wal(db)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (IMMEDIATE: the write lock first, under the busy timeout)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _shrink_wal(db: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL; best effort (another kernel reading keeps it as it is)."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


_trigram_support: bool | None = None


def _has_trigrams() -> bool:
    """Whether this SQLite has FTS5 and its ``trigram`` tokenizer (asked once a process).

    The tokenizer came with SQLite 3.34 (2020-12); Python's own builds bundle a newer SQLite
    with FTS5, but a Python using an older system library (Ubuntu 20.04 has 3.31) or one built
    without FTS5 has neither. There the text search falls back to scanning every row.
    """
    global _trigram_support
    if _trigram_support is None:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("CREATE VIRTUAL TABLE probe USING fts5(text, tokenize='trigram')")
            _trigram_support = True
        except sqlite3.Error:
            _trigram_support = False
        finally:
            probe.close()
    return _trigram_support


def _has_text_index(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?)", (_TEXT_TABLE,)).fetchone()[0] == 1


def _add_text_index(db: sqlite3.Connection) -> None:
    """Migration step 3: the text index, filled with every row logged so far. Where this SQLite
    has no trigram tokenizer the step does nothing, and the first SQLite that has one makes it
    when it opens the file (``_text_index_ready``)."""
    if _has_trigrams() and not _has_text_index(db):
        db.execute(_TEXT_INDEX)
        db.execute(f"INSERT INTO {_TEXT_TABLE} ({_TEXT_TABLE}) VALUES ('rebuild')")


def _text_index_ready(db: sqlite3.Connection) -> bool:
    """Whether searches and writes on this connection use the text index; makes it if missing."""
    if not _has_trigrams():
        return False  # the index, if the file has one, is left alone: writes here do not touch it
    if not _has_text_index(db):  # the file came to layout 3 under a SQLite without trigrams
        try:
            with _transaction(db):
                _add_text_index(db)
        except sqlite3.Error:  # locked by another kernel, a full disk: scan now, try at the next open
            return False
        _shrink_wal(db)
    return True


def _version(db: sqlite3.Connection, path: Path) -> int:
    """The file's layout version: 0 for a new empty file; StoreError for another's or a newer one."""
    # One statement, so one snapshot: read apart, another kernel's migration could land between.
    application, version, tables = db.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version), "
        "EXISTS (SELECT 1 FROM sqlite_master)").fetchone()
    if application == 0 and version == 0 and not tables:
        return 0
    if application != APPLICATION_ID:
        raise StoreError(_foreign(path, "an SQLite database of another program"))
    if version > SCHEMA_VERSION:
        raise StoreError(f"The log at {path} was written by a newer replicate_magic (log layout {version}; "
                         f"this one knows up to {SCHEMA_VERSION}); upgrade replicate_magic or set "
                         "REPLICATE_MAGIC_DB")
    return int(version)


def _foreign(path: Path, why: str) -> str:
    return (f"The log at {path} is not a replicate_magic database ({why}); "
            "move it away or set REPLICATE_MAGIC_DB")


def _os_problem(exc: OSError, path: Path) -> str:
    why = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"The log at {path} cannot be written ({why}); make it writable or set REPLICATE_MAGIC_DB"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"The log at {path} cannot grow: the disk is full; free some space or set REPLICATE_MAGIC_DB"
    return f"The log at {path} cannot be opened ({why}); set REPLICATE_MAGIC_DB to another place"


# -- rows in and out -----------------------------------------------------------------------------


class _Scrubber:
    """Replaces every secret in strings, dict keys and values, and lists."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first

    @classmethod
    def now(cls) -> _Scrubber:
        """The token as requests would use it, and both variables as set (stripped or not)."""
        found = [find_token()]
        for name in ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY"):
            value = os.environ.get(name) or ""
            found += [value, value.strip()]
        return cls(s for s in found if s)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def _row(exchange: Exchange, scrub: _Scrubber) -> dict[str, Any]:
    """The parameters of one INSERT: checked, scrubbed, JSON as canonical text."""
    if exchange.status not in STATUSES:
        raise StoreError(f"Cannot log an exchange with status {exchange.status!r}: "
                         f"it must be one of {', '.join(STATUSES)}")
    text = _json_of(scrub(dict(exchange.input)), "the input")
    return {
        "time": _utc(exchange.time), "chat": scrub(exchange.chat), "prompt": scrub(exchange.prompt),
        "system": scrub(exchange.system), "model": scrub(exchange.model), "version": scrub(exchange.version),
        "input": text, "input_hash": _digest(text), "reply": scrub(exchange.reply),
        "files": _json_of(scrub(list(exchange.files)), "the files"),
        "metrics": _json_of(scrub(dict(exchange.metrics)), "the metrics"),
        "prediction_id": scrub(exchange.prediction_id), "status": exchange.status,
        "cell_id": scrub(exchange.cell_id), "notebook": scrub(exchange.notebook),
        "replayed": int(bool(exchange.replayed)),
    }


def _json_of(value: Any, what: str) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Cannot log {what}: it is not JSON ({exc})") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")  # Replicate's times carry nanoseconds


def _utc(value: str | float | datetime) -> str:
    """A fixed-width UTC ISO 8601 time, so that text order is time order."""
    try:
        if isinstance(value, bool):
            raise TypeError("a bool is not a time")
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, timezone.utc)
        elif isinstance(value, datetime):
            moment = value
        else:
            moment = datetime.fromisoformat(_EXTRA_DIGITS.sub(r"\1", value.strip()).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError, OSError, AttributeError) as exc:
        raise StoreError(f"Cannot log an exchange with the time {value!r} ({exc})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _exchange(row: tuple[Any, ...], path: Path) -> Exchange:
    values = dict(zip(_COLUMNS, row, strict=True))
    where = f"row {values['id']}"
    values["input"] = _loads(values["input"], where, path)
    values["files"] = _loads(values["files"], where, path)
    values["metrics"] = _loads(values["metrics"], where, path)
    values["replayed"] = bool(values["replayed"])
    return Exchange(**values)


def _loads(text: str, where: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise StoreError(f"The log at {path} has damaged data in {where}; that entry cannot be read") from None


def _filters(model: str | None, search: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of ``recent`` and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if model:
        # The model as typed, also as logged from another API ("owner/name @ http://...").
        clauses.append("(model = ? OR model LIKE ? ESCAPE '\\')")
        params += [model, _escaped(model) + " @ %"]
    if search:
        if search.isascii():  # LIKE ignores case for ASCII letters, and uses no Python per row
            clauses.append("(prompt LIKE ? ESCAPE '\\' OR reply LIKE ? ESCAPE '\\')")
            params += [_like(search)] * 2
        else:
            clauses.append("(rm_contains(prompt, ?) OR rm_contains(reply, ?))")
            params += [search.casefold()] * 2
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _indexable(search: str) -> bool:
    """Whether the text index can answer ``search``: three characters or more (it holds
    trigrams), and no letter whose case folds to more than itself. The index folds case one
    character at a time, as LIKE does for ASCII; the scan of other text uses ``str.casefold``,
    where "ß" is "ss": such a search scans, so that it finds what it found before the index."""
    return len(search) >= _TRIGRAMS and (search.isascii() or search.casefold() == search.lower())


def _escaped(text: str) -> str:
    """``text`` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str) -> str:
    escaped = _escaped(text)
    return f"%{escaped}%"


def _contains(text: str | None, needle: str) -> bool:
    return text is not None and needle in text.casefold()


def _latest_per_cell(exchanges: Iterable[Exchange]) -> list[Exchange]:
    """The kernel's rule: a cell's newer turn replaces its older one in place."""
    turns: list[Exchange] = []
    place: dict[str, int] = {}
    for exchange in exchanges:
        cell = exchange.cell_id
        if cell is not None and cell in place:
            turns[place[cell]] = exchange
            continue
        if cell is not None:
            place[cell] = len(turns)
        turns.append(exchange)
    return turns


def _model_totals(row: tuple[Any, ...], overrides: Mapping[str, Entry] | None) -> dict[str, Any]:
    model, count, replays, tokens_in, tokens_out, seconds = row
    metrics = {key: value for key, value in (("input_token_count", tokens_in), ("output_token_count", tokens_out),
                                            ("predict_time", seconds)) if value is not None}
    # Priced by the model's name, as the line under a reply is, also when another API (the
    # emulator, "owner/name @ http://...") answered: what Replicate would bill for it.
    cost = estimate(model.partition(" @ ")[0], metrics, overrides=overrides)
    return {
        "model": model, "exchanges": count, "replayed": replays or 0,
        "input_tokens": tokens_in, "output_tokens": tokens_out, "predict_seconds": seconds,
        "cost": None if cost is None else cost.amount, "cost_basis": None if cost is None else cost.basis,
    }
