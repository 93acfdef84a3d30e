"""The local log (replicate_magic.store) on real files: layout, replay, restore, faults, secrets.

Timings are not tested here; bench/store_bench.py measures them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from replicate_magic import store as store_module
from replicate_magic import store_layout, store_rows
from replicate_magic.errors import ReplicateMagicError
from replicate_magic.store import SCHEMA_VERSION, Exchange, LogStore, StoreError

TOKEN = "r8_FakeT0kenF0rTheLogTestsOnly0123456789"  # the shape of a real token, never a real one
MODEL = "meta/meta-llama-3-70b-instruct"


def exchange(**fields) -> Exchange:
    values = {"model": MODEL, "input": {"prompt": "hello", "max_tokens": 64}, "reply": "hi there", "prompt": "hello"}
    values.update(fields)
    return Exchange(**values)


@pytest.fixture
def store(tmp_path):
    with LogStore(tmp_path / "log.db") as log:
        yield log


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    return TOKEN


def one_line_store_error(call, *args, **kwargs) -> str:
    with pytest.raises(StoreError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, ReplicateMagicError)
    return message


def every_call(log: LogStore) -> list:
    return [
        lambda: log.record(exchange()),
        lambda: log.find_replay(MODEL, {"prompt": "hello"}),
        lambda: log.recent(),
        lambda: log.conversation("default"),
        lambda: log.saved_conversations(),
        lambda: log.summary(),
        lambda: log.save_schema(MODEL, "v1", {}),
        lambda: log.load_schema(MODEL),
    ]


# -- where the file is, and how it is made ------------------------------------------------------


def test_making_a_store_touches_no_disk(tmp_path):
    path = tmp_path / "not" / "yet" / "log.db"
    log = LogStore(path)
    assert log.path == path
    assert not (tmp_path / "not").exists()
    log.record(exchange())
    assert path.exists()
    log.close()


def test_the_path_comes_from_the_argument_then_the_environment_then_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("REPLICATE_MAGIC_DB", raising=False)
    if sys.platform.startswith("linux"):
        assert LogStore().path == tmp_path / "data" / "replicate_magic" / "log.db"
    monkeypatch.setenv("REPLICATE_MAGIC_DB", str(tmp_path / "elsewhere.db"))
    assert LogStore().path == tmp_path / "elsewhere.db"
    assert LogStore(tmp_path / "given.db").path == tmp_path / "given.db"


def test_the_log_and_its_wal_and_shm_files_are_private(tmp_path):
    path = tmp_path / "new" / "log.db"
    with LogStore(path) as log:
        log.record(exchange())
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_log_made_readable_by_others_is_made_private_again(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path) as log:
        log.record(exchange())
    path.chmod(0o644)
    with LogStore(path) as log:
        log.recent()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_file_is_in_wal_mode_at_the_current_layout(store):
    store.record(exchange())
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# -- recording and reading back -----------------------------------------------------------------


def test_an_exchange_reads_back_as_recorded(store):
    sent = exchange(time="2026-12-01T10:00:00.000001+00:00", chat="work", system="Be brief.", version="abc123",
                    files=[{"url": "https://replicate.delivery/x.png"}], metrics={"predict_time": 1.5},
                    prediction_id="p1", cell_id="cell-1", notebook="/home/me/n.ipynb", input={"prompt": "hello",
                                                                                                 "top_p": 0.9})
    row_id = store.record(sent)
    [got] = store.conversation("work")
    assert got == dataclasses.replace(sent, id=row_id)


def test_times_are_stored_as_fixed_width_utc(store):
    store.record(exchange(time=0.0, prompt="epoch"))
    store.record(exchange(time="2023-10-29T11:19:59.558752983Z", prompt="nanoseconds"))
    store.record(exchange(time="2023-10-29T13:19:59+02:00", prompt="offset"))
    times = {row["prompt"]: row["time"] for row in store.recent()}
    assert times == {"epoch": "1970-01-01T00:00:00.000000+00:00",
                     "nanoseconds": "2023-10-29T11:19:59.558752+00:00",
                     "offset": "2023-10-29T11:19:59.000000+00:00"}


@pytest.mark.parametrize("fields, words", [
    ({"status": "done"}, "status 'done'"),
    ({"input": {"bad": {1, 2}}}, "the input: it is not JSON"),
    ({"time": "yesterday"}, "the time 'yesterday'"),
])
def test_an_exchange_that_cannot_be_logged_is_one_store_error(store, fields, words):
    assert words in one_line_store_error(store.record, exchange(**fields))


def test_two_threads_share_one_store(store):
    def write(name: str) -> None:
        for i in range(200):
            store.record(exchange(chat=name, input={"i": i}))

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [c["turns"] for c in sorted(store.saved_conversations(), key=lambda c: c["name"])] == [200, 200]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(store):
    store.record(exchange(prompt="parent, before"))
    child = os.fork()
    if child == 0:  # the child: log one row through the inherited store, then leave at once
        code = 0
        try:
            store.record(exchange(prompt="child"))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.record(exchange(prompt="parent, after"))
    assert sorted(r["prompt"] for r in store.recent()) == ["child", "parent, after", "parent, before"]


WRITER = textwrap.dedent("""
    import sys, time
    from replicate_magic.store import Exchange, LogStore
    path, name, start, rows = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    while time.time() < start:  # both writers begin together, on a file neither has opened yet
        time.sleep(0.001)
    with LogStore(path) as log:
        for i in range(rows):
            log.record(Exchange(chat=name, model="m/m", input={"i": i}, prompt=f"{name} {i}", reply="r" * 500))
""")


def run_writers(path: Path, names: list[str], rows: int) -> None:
    """Processes that open the same new log at the same moment and each log ``rows`` rows."""
    start = time.time() + 1.5  # time enough for every interpreter to start
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(start), str(rows)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
    errors = [w.communicate(timeout=60)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * len(names), errors
    assert not any("locked" in e for e in errors)


def test_two_processes_write_at_once_and_lose_nothing(tmp_path):
    path = tmp_path / "shared.db"
    run_writers(path, ["a", "b"], 200)
    with LogStore(path) as log:
        counts = {c["name"]: c["turns"] for c in log.saved_conversations()}
        prompts = {row["prompt"] for row in log.recent(1000)}
    assert counts == {"a": 200, "b": 200}
    assert prompts == {f"{name} {i}" for name in "ab" for i in range(200)}


OPENER = textwrap.dedent("""
    import sys, time
    from replicate_magic.store import Exchange, LogStore
    folder, name, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    for n in range(rounds):  # each round, every process opens the same new file at the same moment
        while time.time() < start + n * 0.05:
            time.sleep(0.0005)
        with LogStore(f"{folder}/{n}.db") as log:
            log.record(Exchange(chat=name, model="m/m", input={}, reply=""))
""")


def test_many_processes_opening_a_new_log_at_once_make_it_once(tmp_path):
    names, rounds = [f"p{i}" for i in range(6)], 20
    start = time.time() + 1.5
    openers = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), name, str(start), str(rounds)],
                                stderr=subprocess.PIPE, text=True) for name in names]
    errors = [p.communicate(timeout=60)[1] for p in openers]
    assert [p.returncode for p in openers] == [0] * len(names), errors
    for n in range(rounds):
        with LogStore(tmp_path / f"{n}.db") as log:
            assert sorted(c["name"] for c in log.saved_conversations()) == names


# -- the token is never written -----------------------------------------------------------------


def test_the_token_appears_nowhere_in_the_files(tmp_path, token):
    path = tmp_path / "log.db"
    log = LogStore(path)
    log.record(exchange(prompt=f"my token is {token}", system=f"system {token}",
                        input={"prompt": f"my token is {token}", token: [token, {"deep": token}]},
                        reply=f"you said {token}", metrics={"note": token}, notebook=f"/tmp/{token}.ipynb"))
    log.save_schema(MODEL, "v1", {"description": f"example {token}"})
    found = log.recent()[0]
    assert found["reply"] == "you said [REDACTED]"
    assert found["input"] == {"prompt": "my token is [REDACTED]", "[REDACTED]": ["[REDACTED]", {"deep": "[REDACTED]"}]}

    def leaked() -> list[str]:
        names = [p for p in tmp_path.iterdir() if p.name.startswith("log.db")]
        assert path in names
        return [p.name for p in names if token.encode() in p.read_bytes()]

    assert Path(f"{path}-wal").exists()
    assert leaked() == []  # while open: the rows are still in the WAL file
    log.close()
    assert leaked() == []  # after the checkpoint into the main file


def test_a_replay_lookup_with_the_token_in_the_input_finds_the_scrubbed_row(store, token):
    store.record(exchange(input={"prompt": f"echo {token}"}))
    assert store.find_replay(MODEL, {"prompt": f"echo {token}"}) is not None


# -- replay -------------------------------------------------------------------------------------


def test_replay_matches_the_same_input_whatever_the_key_order(store):
    store.record(exchange(input={"prompt": "hi", "temperature": 0.2, "messages": [{"role": "user", "content": "é"}]}))
    found = store.find_replay(MODEL, {"messages": [{"content": "é", "role": "user"}], "temperature": 0.2,
                                      "prompt": "hi"})
    assert found is not None and found.reply == "hi there"
    assert store.find_replay(MODEL, {"prompt": "hi", "temperature": 0.3, "messages": []}) is None
    assert store.find_replay("meta/meta-llama-3-8b-instruct", {"prompt": "hi", "temperature": 0.2}) is None


def test_replay_never_finds_interrupted_or_failed_exchanges(store):
    store.record(exchange(status="interrupted", reply="half an ans"))
    store.record(exchange(status="failed", reply=""))
    assert store.find_replay(MODEL, {"prompt": "hello", "max_tokens": 64}) is None


def test_replay_finds_the_latest_original_prediction(store):
    store.record(exchange(time="2026-01-01T00:00:00Z", reply="old", prediction_id="p-old"))
    store.record(exchange(time="2026-02-01T00:00:00Z", reply="new", prediction_id="p-new"))
    store.record(exchange(time="2026-03-01T00:00:00Z", reply="new", prediction_id="p-new", replayed=True))
    store.record(exchange(time="2026-04-01T00:00:00Z", reply="cut", status="interrupted"))
    found = store.find_replay(MODEL, {"max_tokens": 64, "prompt": "hello"})
    assert found is not None
    assert (found.reply, found.prediction_id, found.replayed) == ("new", "p-new", False)
    assert found.time == "2026-02-01T00:00:00.000000+00:00"


# -- restore ------------------------------------------------------------------------------------


def test_a_conversation_keeps_the_latest_exchange_of_each_cell_in_its_place(store):
    for time_, cell, prompt, status in [
        ("2026-01-01T00:00:01Z", "A", "a1", "succeeded"),
        ("2026-01-01T00:00:02Z", "B", "b1", "succeeded"),
        ("2026-01-01T00:00:03Z", None, "free1", "succeeded"),
        ("2026-01-01T00:00:04Z", "A", "a2", "succeeded"),  # A re-run: replaces a1 where it was
        ("2026-01-01T00:00:05Z", "B", "b2", "failed"),  # a failed re-run leaves b1 standing
        ("2026-01-01T00:00:06Z", None, "free2", "succeeded"),
        ("2026-01-01T00:00:07Z", "C", "c1", "interrupted"),
    ]:
        store.record(exchange(time=time_, cell_id=cell, prompt=prompt, chat="work", status=status))
    store.record(exchange(time="2026-01-01T00:00:08Z", cell_id="A", prompt="other chat", chat="else"))
    assert [e.prompt for e in store.conversation("work")] == ["a2", "b1", "free1", "free2"]
    assert [e.prompt for e in store.conversation("else")] == ["other chat"]
    assert store.conversation("nobody") == []


def test_replayed_turns_are_restored_too(store):
    store.record(exchange(chat="c", cell_id="x", replayed=True))
    assert len(store.conversation("c")) == 1


def test_saved_conversations_count_turns_as_restored(store):
    store.record(exchange(chat="a", cell_id="1", time="2026-01-01T00:00:00Z"))
    store.record(exchange(chat="a", cell_id="1", time="2026-01-02T00:00:00Z"))
    store.record(exchange(chat="a", cell_id=None, time="2026-01-03T00:00:00Z"))
    store.record(exchange(chat="b", cell_id=None, time="2026-01-04T00:00:00Z"))
    store.record(exchange(chat="c", status="failed", time="2026-01-05T00:00:00Z"))
    assert store.saved_conversations() == [
        {"name": "b", "turns": 1, "last": "2026-01-04T00:00:00.000000+00:00"},
        {"name": "a", "turns": 2, "last": "2026-01-03T00:00:00.000000+00:00"},
    ]


# -- looking back -------------------------------------------------------------------------------


def test_recent_is_newest_first_and_filters_by_model_and_text(store):
    store.record(exchange(time="2026-01-01T00:00:00Z", prompt="Sea haiku", reply="Waves"))
    store.record(exchange(time="2026-01-02T00:00:00Z", prompt="sum", reply="100% sure", model="m/other"))
    store.record(exchange(time="2026-01-03T00:00:00Z", prompt="Почему небо голубое?", reply="Рэлей"))
    assert [r["prompt"] for r in store.recent()] == ["Почему небо голубое?", "sum", "Sea haiku"]
    assert [r["prompt"] for r in store.recent(2)] == ["Почему небо голубое?", "sum"]
    assert store.recent(0) == []
    assert [r["prompt"] for r in store.recent(model="m/other")] == ["sum"]
    assert [r["prompt"] for r in store.recent(search="WAVES")] == ["Sea haiku"]
    assert [r["prompt"] for r in store.recent(search="НЕБО")] == ["Почему небо голубое?"]
    assert [r["prompt"] for r in store.recent(search="0% s")] == ["sum"]
    assert store.recent(search="1_0") == []  # % and _ are literal text, not wildcards
    assert store.recent(search="sea", model="m/other") == []
    assert set(store.recent()[0]) >= {"time", "chat", "model", "prompt", "reply", "metrics", "status", "id"}


def test_summary_totals_new_predictions_per_model(store):
    metrics = {"input_token_count": 1000, "output_token_count": 500, "predict_time": 2.0}
    store.record(exchange(metrics=metrics))
    store.record(exchange(metrics=metrics, status="interrupted"))
    store.record(exchange(metrics=metrics, replayed=True))
    store.record(exchange(model="someone/unpriced", metrics={"predict_time": 3.5}))
    rows = {row["model"]: row for row in store.summary()}
    llama = rows[MODEL]
    assert (llama["exchanges"], llama["replayed"], llama["input_tokens"], llama["output_tokens"]) == (3, 1, 2000, 1000)
    assert llama["predict_seconds"] == 4.0
    assert llama["cost"] == pytest.approx((2000 * 0.65 + 1000 * 2.75) / 1e6)
    unpriced = rows["someone/unpriced"]
    assert (unpriced["predict_seconds"], unpriced["cost"], unpriced["cost_basis"]) == (3.5, None, None)
    priced = {row["model"]: row for row in store.summary({"someone/unpriced": {"per_second": 0.001}})}
    assert priced["someone/unpriced"]["cost"] == pytest.approx(0.0035)


def test_schemas_are_kept_per_model(store):
    assert store.load_schema(MODEL) is None
    store.save_schema(MODEL, "v1", {"components": {"schemas": {"Input": {}}}})
    store.save_schema(MODEL, "v2", {"components": {}})
    version, schema, saved_at = store.load_schema(MODEL)
    assert (version, schema) == ("v2", {"components": {}})
    assert saved_at.endswith("+00:00")


# -- bad files and faults -----------------------------------------------------------------------


def not_ours(path: Path) -> str:
    return (f"The log at {path} is not a replicate_magic database (file is not a database); "
            "move it away or set REPLICATE_MAGIC_DB")


@pytest.mark.parametrize("content", [os.urandom(8192), b"just some notes\n" * 300], ids=["random bytes", "text"])
def test_a_corrupt_or_foreign_file_is_one_line_from_every_call(tmp_path, content):
    path = tmp_path / "log.db"
    path.write_bytes(content)
    with LogStore(path) as log:
        for call in every_call(log):
            assert one_line_store_error(call) == not_ours(path)
    assert path.read_bytes() == content


def test_another_programs_sqlite_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "log.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.commit()
    before = path.read_bytes()
    with LogStore(path) as log:
        assert one_line_store_error(log.recent) == (
            f"The log at {path} is not a replicate_magic database (an SQLite database of another program); "
            "move it away or set REPLICATE_MAGIC_DB")
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


def test_a_log_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path) as log:
        log.record(exchange())
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    with LogStore(path) as log:
        assert one_line_store_error(log.recent) == (
            f"The log at {path} was written by a newer replicate_magic (log layout {SCHEMA_VERSION + 7}; "
            f"this one knows up to {SCHEMA_VERSION}); upgrade replicate_magic or set REPLICATE_MAGIC_DB")


def test_a_log_of_the_first_layout_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "log.db"
    digest = hashlib.sha256(b'{"prompt":"kept?"}').hexdigest()
    with contextlib.closing(sqlite3.connect(path)) as db:  # layout 1, written out by hand
        db.executescript("""
            CREATE TABLE exchanges (id INTEGER PRIMARY KEY, time TEXT NOT NULL, chat TEXT NOT NULL,
                prompt TEXT NOT NULL, system TEXT, model TEXT NOT NULL, version TEXT, input TEXT NOT NULL,
                input_hash TEXT NOT NULL, reply TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
                prediction_id TEXT, status TEXT NOT NULL, cell_id TEXT, notebook TEXT,
                replayed INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX exchanges_replay ON exchanges (model, input_hash, time);
            CREATE INDEX exchanges_time ON exchanges (time);
            CREATE INDEX exchanges_chat ON exchanges (chat, time);
            CREATE INDEX exchanges_model ON exchanges (model, time);
            INSERT INTO exchanges (time, chat, prompt, model, input, input_hash, reply, status)
                VALUES ('2025-05-05T00:00:00.000000+00:00', 'old', 'kept?', 'm/m', '{"prompt":"kept?"}',
                        'DIGEST', 'yes', 'succeeded');
            PRAGMA application_id = 1380797511;
            PRAGMA user_version = 1;
        """.replace("DIGEST", digest))
    with LogStore(path) as log:
        [old] = log.conversation("old")
        assert (old.prompt, old.reply, old.files) == ("kept?", "yes", [])
        assert log.find_replay("m/m", {"prompt": "kept?"}) == old
        log.save_schema("m/m", "v9", {"ok": True})
        assert log.load_schema("m/m")[:2] == ("v9", {"ok": True})
        log.record(exchange(chat="old"))
        assert len(log.conversation("old")) == 2
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_damaged_row_is_one_line(store):
    store.record(exchange())
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        db.execute("UPDATE exchanges SET metrics = '{not json'")
        db.commit()
    message = one_line_store_error(store.recent)
    assert message == f"The log at {store.path} has damaged data in row 1; that entry cannot be read"


@contextlib.contextmanager
def unwritable(path: Path):
    """``path`` (a file or a directory) read-only, even for root (who ignores permission bits)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root, and this file system cannot make a file immutable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_directory_is_one_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / "log.db"
    with unwritable(folder), LogStore(path) as log:
        message = one_line_store_error(log.record, exchange())
    assert message.startswith(f"The log at {path} cannot be written (")
    assert message.endswith("); make it writable or set REPLICATE_MAGIC_DB")


def test_a_read_only_log_file_is_one_line(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path) as log:
        log.record(exchange())
    with unwritable(path), LogStore(path) as log:
        message = one_line_store_error(log.record, exchange())
    assert message.startswith(f"The log at {path} cannot be written (")


def test_a_lock_held_past_the_timeout_is_one_line(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path) as log:
        log.record(exchange())
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other, \
            LogStore(path, timeout=0.2) as log:
        other.execute("BEGIN IMMEDIATE")  # another kernel in the middle of a long write
        assert log.recent()  # readers are not blocked in WAL mode
        assert one_line_store_error(log.record, exchange()) == (
            f"The log at {path} stayed locked by another process for more than 0.2 s; try again")
        other.execute("ROLLBACK")
        log.record(exchange())  # and the next call works again


def test_a_full_disk_is_one_line(store):
    store.record(exchange())
    # SQLite's own page limit stands in for a full disk: it fails the same way (SQLITE_FULL).
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    assert one_line_store_error(store.record, exchange(reply="x" * 100_000)) == (
        f"The log at {store.path} cannot grow: the disk is full; free some space or set REPLICATE_MAGIC_DB")


def test_the_store_recovers_once_a_bad_file_is_moved_away(tmp_path):
    path = tmp_path / "log.db"
    path.write_text("not a database\n" * 100)
    with LogStore(path) as log:
        one_line_store_error(log.recent)
        path.rename(tmp_path / "moved.txt")
        log.record(exchange())
        assert len(log.recent()) == 1


# -- text search through the trigram index ------------------------------------------------------

needs_trigrams = pytest.mark.skipif(not store_layout._has_trigrams(),
                                    reason="this SQLite has no FTS5 trigram tokenizer (3.34+): searches scan")


def searched(log: LogStore, text: str, **filters) -> tuple[list[str], bool]:
    """The prompts ``recent(search=text)`` finds, and whether it asked the text index."""
    log.recent(1)  # opened, so the statements of the search itself are the ones traced
    statements: list[str] = []
    log._db.set_trace_callback(statements.append)
    try:
        prompts = [row["prompt"] for row in log.recent(search=text, **filters)]
    finally:
        log._db.set_trace_callback(None)
    return prompts, any("MATCH" in s for s in statements)


LAYOUT_2 = """
    CREATE TABLE exchanges (id INTEGER PRIMARY KEY, time TEXT NOT NULL, chat TEXT NOT NULL,
        prompt TEXT NOT NULL, system TEXT, model TEXT NOT NULL, version TEXT, input TEXT NOT NULL,
        input_hash TEXT NOT NULL, reply TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
        prediction_id TEXT, status TEXT NOT NULL, cell_id TEXT, notebook TEXT,
        replayed INTEGER NOT NULL DEFAULT 0, files TEXT NOT NULL DEFAULT '[]');
    CREATE INDEX exchanges_replay ON exchanges (model, input_hash, time);
    CREATE INDEX exchanges_time ON exchanges (time);
    CREATE INDEX exchanges_chat ON exchanges (chat, time);
    CREATE INDEX exchanges_model ON exchanges (model, time);
    CREATE TABLE schemas (model TEXT PRIMARY KEY, version TEXT, schema TEXT NOT NULL, saved_at TEXT NOT NULL);
    PRAGMA application_id = 1380797511;
    PRAGMA user_version = 2;
"""


def write_layout_2(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A log of layout 2 (before the text index), written out by hand: (time, prompt, reply) rows."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(LAYOUT_2)
        db.executemany("INSERT INTO exchanges (time, chat, prompt, model, input, input_hash, reply, status) "
                       "VALUES (?, 'old', ?, 'm/m', '{}', 'x', ?, 'succeeded')", rows)
        db.commit()


@needs_trigrams
def test_a_log_of_the_second_layout_is_migrated_and_its_rows_are_searched_through_the_index(tmp_path):
    path = tmp_path / "log.db"
    write_layout_2(path, [(f"2025-01-{day:02d}T00:00:00.000000+00:00", f"old question {day}",
                           "the Answer is 42" if day % 2 else "no idea") for day in range(1, 11)])
    with LogStore(path) as log:
        assert searched(log, "ANSWER IS") == ([f"old question {day}" for day in (9, 7, 5, 3, 1)], True)
        log.record(exchange(time="2025-02-01T00:00:00Z", prompt="new question", reply="an answer, again"))
        assert searched(log, "answer")[0] == ["new question", "old question 9", "old question 7",
                                             "old question 5", "old question 3", "old question 1"]
        assert searched(log, "question 1") == (["old question 10", "old question 1"], True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexed = db.execute("SELECT rowid FROM exchanges_text WHERE exchanges_text MATCH '\"no idea\"' "
                             "ORDER BY rowid").fetchall()
        assert indexed == [(2,), (4,), (6,), (8,), (10,)]


@needs_trigrams
def test_non_ascii_text_is_searched_through_the_index_in_any_case(store):
    for prompt, reply in [("Почему небо голубое?", "Рэлей"), ("un été chaud", "Œuvre complète"),
                          ("ΣΟΦΊΑ", "東京都の天気"), ("emoji", "fire 🔥🔥 and ice")]:
        store.record(exchange(prompt=prompt, reply=reply))
    assert searched(store, "НЕБО") == (["Почему небо голубое?"], True)
    assert searched(store, "ÉTÉ CH") == (["un été chaud"], True)
    assert searched(store, "œuvre") == (["un été chaud"], True)
    assert searched(store, "σοφία") == (["ΣΟΦΊΑ"], True)
    assert searched(store, "京都の") == (["ΣΟΦΊΑ"], True)
    assert searched(store, "🔥 and") == (["emoji"], True)
    assert searched(store, "ete") == ([], True)  # accents count, as they did in the scan


def test_searches_shorter_than_three_characters_scan(store):
    store.record(exchange(prompt="ok", reply="x"))
    store.record(exchange(prompt="Öl", reply="y"))
    store.record(exchange(prompt="none", reply="z"))
    assert searched(store, "OK") == (["ok"], False)
    assert searched(store, "öL") == (["Öl"], False)
    assert searched(store, "y") == (["Öl"], False)


@needs_trigrams
@pytest.mark.parametrize("text, found", [
    ("100%", ["100% sure"]),  # not "1000 apples"
    ("%", ["100% sure"]),
    ("a_b", ["a_b"]),  # not "axb"
    ("_", ["a_b"]),
    ('say "hi"', ['say "hi" twice']),  # a double quote ends no phrase
    ("\\n", ["back\\n slash"]),
    ("OR", ["or else"]),  # words of the FTS5 query language are text too
    ("*", ["star*"]),
])
def test_like_and_fts_special_characters_are_searched_literally(store, text, found):
    for prompt in ("100% sure", "1000 apples", "a_b", "axb", 'say "hi" twice', "back\\n slash", "or else",
                   "star*", "plain"):
        store.record(exchange(prompt=prompt, reply="-"))
    prompts, indexed = searched(store, text)
    assert prompts == found
    assert indexed == (len(text) >= 3)


@needs_trigrams
@pytest.mark.parametrize("few, window", [(1000, 2000), (1, 2000), (1, 3)],
                         ids=["few rows: read and sorted", "many rows: walked newest first",
                              "many rows: the newest hold enough"])
def test_the_index_answers_newest_first_by_time_with_the_filters(store, monkeypatch, few, window):
    monkeypatch.setattr(store_module, "_FEW", few)
    monkeypatch.setattr(store_module, "_WINDOW", window)
    for day, model, prompt in [(3, MODEL, "tide one"), (1, MODEL, "tide two"), (2, "m/other", "tide three"),
                               (4, MODEL, "dry four")]:
        store.record(exchange(time=f"2026-01-0{day}T00:00:00Z", model=model, prompt=prompt, reply="r"))
    assert searched(store, "TIDE") == (["tide one", "tide three", "tide two"], True)
    assert searched(store, "tide", model=MODEL) == (["tide one", "tide two"], True)
    assert [r["prompt"] for r in store.recent(2, search="tide")] == ["tide one", "tide three"]


@needs_trigrams
def test_the_index_finds_what_the_scan_finds(store, monkeypatch):
    texts = ["The tide comes in", "across the SAND", "every wave writes", "Straße", "naïve café", "50% off_now"]
    for i in range(60):
        store.record(exchange(prompt=texts[i % 6] + f" #{i}", reply=texts[(i * 7) % 6].upper()))
    searches = ["the", "TIDE COMES", "sand", "e w", "aße", "ASSE", "CAFÉ", "% off_", "#11", "#59", "nothing"]
    through_index = {text: searched(store, text) for text in searches}
    # "aße" scans: its case folds to "asse", which the index, folding a letter at a time, would miss
    assert [text for text, (_, indexed) in through_index.items() if not indexed] == ["aße"]
    assert "Straße #3" in through_index["aße"][0]
    monkeypatch.setattr(store_rows, "_TRIGRAMS", 10**6)  # every search scans
    for text in searches:
        assert through_index[text][0] == searched(store, text)[0], text


@needs_trigrams
def test_without_trigrams_the_search_scans_and_a_later_sqlite_indexes_what_it_logged(tmp_path, monkeypatch):
    path = tmp_path / "log.db"
    monkeypatch.setattr(store_layout, "_trigram_support", False)  # as a SQLite older than 3.34
    with LogStore(path) as log:
        log.record(exchange(prompt="logged without the index"))
        assert searched(log, "WITHOUT") == (["logged without the index"], False)
    with contextlib.closing(sqlite3.connect(path)) as db:  # layout 3, with no index to keep in step
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'exchanges_text'").fetchone() == (0,)
    monkeypatch.setattr(store_layout, "_trigram_support", True)
    with LogStore(path) as log:  # a SQLite with trigrams makes the index, with the rows so far
        assert searched(log, "without") == (["logged without the index"], True)
        log.record(exchange(prompt="logged with it"))
    monkeypatch.setattr(store_layout, "_trigram_support", False)
    with LogStore(path) as log:  # the file has an index now, which this SQLite leaves alone
        log.record(exchange(prompt="logged beside it"))
        assert searched(log, "logged") == (["logged beside it", "logged with it", "logged without the index"],
                                           False)
    monkeypatch.setattr(store_layout, "_trigram_support", True)
    with LogStore(path) as log:
        assert searched(log, "BESIDE") == (["logged beside it"], False)  # the index is behind: scanned
        log.record(exchange(prompt="and again"))  # the next write catches the index up
        assert searched(log, "BESIDE") == (["logged beside it"], True)
        assert searched(log, "logged")[0] == ["logged beside it", "logged with it", "logged without the index"]
