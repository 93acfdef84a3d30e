"""The local log's file: its layout, one step per version, and how it is opened and migrated. I/O.

``store.LogStore`` reads and writes exchanges; this module makes sure the file under it is
ours (its application id), in WAL mode, private (0600), and at the current layout,
running the steps an older file misses. Every failure becomes a one-line ``StoreError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ReplicateMagicError

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "StoreError"]

APPLICATION_ID = 0x524D4C47  # "RMLG" in the file header: this file is a replicate_magic log


class StoreError(ReplicateMagicError):
    """The log could not be read or written; one line that says why and what to do."""


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
