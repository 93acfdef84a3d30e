"""Benchmark 9, the local log (replicate_magic.store): run by bench/run.py (``--only 9``).

A log of 100,000 exchanges is filled through ``LogStore.record`` (realistic sizes: a prompt of
about 250 characters, a 1,200-character reply, the model input with its template and
settings, Replicate's metrics), in a file of its own under the benchmark's temporary
directory, with the text index switched off, as a log of layout 2 (before the index) is. It is
then opened as a log of layout 2, so the migration indexes its 100,000 rows (timed, and the
file's growth). Then, on that full log: what one more ``record`` costs with and without the
index, ``recent()`` (what ``%replicate log`` shows), ``recent(search=...)`` (what ``%replicate
log TEXT`` shows), ``find_replay`` (what a ``--cache`` cell asks before any request), and for
information ``recent`` filtered by model, ``conversation``, ``summary`` and opening the file.
The bench's replies are one sentence repeated, which an index of trigrams stores compactly, so
the index's size is also measured on 10,000 exchanges of varied text (this repository's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROWS = 100_000
MODELS = ("meta/meta-llama-3-70b-instruct", "meta/meta-llama-3-8b-instruct", "mistralai/mixtral-8x7b-instruct-v0.1",
          "openai/gpt-4o-mini", "anthropic/claude-3.7-sonnet")
REPLY = ("The tide comes in across the sand, and every wave writes something new; " * 20)[:1200]
RECORD_GOAL_MS, RECENT_GOAL_MS, REPLAY_GOAL_MS, SEARCH_GOAL_MS = 2.0, 100.0, 5.0, 100.0
VARIED_ROWS = 10_000
# Searches: in every row (the prompt's "why?"), in one prompt, in none; every trigram of the
# worst case is in every row, the text itself in none (the index must check every position).
EVERYWHERE, ONE_ROW, NOWHERE, WORST, SHORT = "WHY?", "Question 77777:", "no such words anywhere", "the tide wave", "zq"


def exchange_for(i: int) -> Any:
    from replicate_magic.store import Exchange

    prompt = f"Question {i}: " + "what does this notebook cell compute, and why? " * 5
    return Exchange(
        chat=f"chat-{i % 20}", cell_id=f"cell-{i % 500}", model=MODELS[i % len(MODELS)], version=None,
        prompt=prompt, system="You are a helpful assistant.", reply=REPLY,
        input={"prompt": prompt, "system_prompt": "You are a helpful assistant.", "max_tokens": 512,
               "temperature": 0.6, "top_p": 0.9, "prompt_template": "<|begin_of_text|>{prompt}<|eot_id|>"},
        metrics={"input_token_count": 120 + i % 50, "output_token_count": 300 + i % 200, "predict_time": 2.5,
                 "time_to_first_token": 0.2, "tokens_per_second": 120.0},
        prediction_id=f"p{i:012d}", status="succeeded" if i % 10 else "interrupted",
    )


def timed_ms(call: Callable[[], Any], repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` calls, after one unmeasured call."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


@contextlib.contextmanager
def no_text_index() -> Iterator[None]:
    """Stores opened inside neither make nor use the text index, as under a SQLite without
    trigrams (instrumentation: the store's own switch for that case)."""
    from replicate_magic import store_layout as store  # where the switch lives

    saved = store._trigram_support
    store._trigram_support = False
    try:
        yield
    finally:
        store._trigram_support = saved


def as_layout_2(path: Path) -> None:
    """A log filled with the index off has layout 2's tables: mark it so, as an older log is."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert not db.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'exchanges_text%'").fetchone()[0]
        db.execute("DROP TABLE IF EXISTS templates")  # layout 4's: a layout 2 file has none
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA user_version = 2")


def files_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


def migrate(path: Path) -> tuple[float, float, float]:
    """Open a log of layout 2 (its rows get indexed): seconds, MB before, MB after."""
    from replicate_magic.store import SCHEMA_VERSION, LogStore

    as_layout_2(path)
    before = files_mb(path)
    start = time.perf_counter()
    with LogStore(path) as log:
        log.recent(1)
        seconds = time.perf_counter() - start
        assert log._indexed, "this SQLite has no FTS5 trigram tokenizer: the search scans"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    return seconds, before, files_mb(path)


def varied_exchanges(count: int) -> Iterator[Any]:
    """Exchanges whose prompt and reply are windows of this repository's own text and code."""
    root = Path(__file__).resolve().parent.parent
    words = " ".join(f.read_text(encoding="utf-8", errors="replace")
                     for pattern in ("replicate_magic/**/*.py", "tests/*.py", "*.md", "docs/**/*.md")
                     for f in sorted(root.glob(pattern))).split()
    pick = random.Random(9)
    for i in range(count):
        a, b = pick.randrange(len(words) - 300), pick.randrange(len(words) - 300)
        prompt = f"Question {i}: " + " ".join(words[a:a + 40])[:240]
        reply = " ".join(words[b:b + 250])[:1200]
        base = exchange_for(i)
        yield dataclasses.replace(base, prompt=prompt, reply=reply, input={**base.input, "prompt": prompt})


def bench_store(s: Any, runs: int, tmp: Path, **_: Any) -> None:
    from replicate_magic.store import LogStore

    path = tmp / "store-bench" / "log.db"
    with no_text_index(), LogStore(path) as log:
        start = time.perf_counter()
        for i in range(ROWS):
            log.record(exchange_for(i))
        fill = time.perf_counter() - start
        gc.collect()
        more = iter(range(ROWS, ROWS + 10_000))
        unindexed_ms = timed_ms(lambda: log.record(exchange_for(next(more))), 2_000)
        scan_ms = [timed_ms(lambda text=text: log.recent(100, search=text), max(5, runs))
                   for text in (ONE_ROW, NOWHERE)]
    migrate_s, before_mb, after_mb = migrate(path)
    with LogStore(path) as log:
        gc.collect()
        record_ms = timed_ms(lambda: log.record(exchange_for(next(more))), 2_000)
        hit = exchange_for(ROWS // 2 + 1)  # a succeeded exchange from the middle of the log
        repeat = max(20, 10 * runs)
        recent_ms = timed_ms(lambda: log.recent(100), repeat)
        replay_hit_ms = timed_ms(lambda: log.find_replay(hit.model, dict(reversed(hit.input.items()))), repeat)
        replay_miss_ms = timed_ms(lambda: log.find_replay(hit.model, {"prompt": "never asked"}), repeat)
        by_model_ms = timed_ms(lambda: log.recent(100, model=MODELS[2]), repeat)
        search_ms = {text: timed_ms(lambda text=text: log.recent(100, search=text), repeat)
                     for text in (EVERYWHERE, ONE_ROW, NOWHERE, WORST, SHORT)}
        found = {text: len(log.recent(100, search=text)) for text in search_ms}
        chat_ms = timed_ms(lambda: log.conversation("chat-7"), max(5, runs))
        summary_ms = timed_ms(log.summary, max(5, runs))
        assert log.find_replay(hit.model, hit.input) is not None
    assert (found[EVERYWHERE], found[ONE_ROW], found[NOWHERE], found[WORST], found[SHORT]) == (100, 1, 0, 0, 0), found
    size = files_mb(path)
    open_ms = timed_ms(lambda: _open_and_close(path), max(5, runs))

    varied = tmp / "store-bench-varied" / "log.db"
    with no_text_index(), LogStore(varied) as log:
        chars = 0
        for exchange in varied_exchanges(VARIED_ROWS):
            log.record(exchange)
            chars += len(exchange.prompt) + len(exchange.reply)
    varied_s, varied_before, varied_after = migrate(varied)

    med = statistics.median
    searches = [med(search_ms[t]) for t in (EVERYWHERE, ONE_ROW, NOWHERE)]
    s.row("`record`: one more exchange into a log of 100,000, with the text index (median / p95)",
          f"{med(record_ms):.3f} / {p95(record_ms):.3f} ms", f"< {RECORD_GOAL_MS:g} ms",
          p95(record_ms) < RECORD_GOAL_MS)
    s.row("the same without the index (layout 2, before the migration)",
          f"{med(unindexed_ms):.3f} / {p95(unindexed_ms):.3f} ms")
    s.row("`recent(100)` over 100,000 exchanges (median / p95)", f"{med(recent_ms):.2f} / {p95(recent_ms):.2f} ms",
          f"< {RECENT_GOAL_MS:g} ms", p95(recent_ms) < RECENT_GOAL_MS)
    s.row("`find_replay` over 100,000 exchanges: found / not found (median)",
          f"{med(replay_hit_ms):.3f} / {med(replay_miss_ms):.3f} ms", f"< {REPLAY_GOAL_MS:g} ms",
          max(med(replay_hit_ms), med(replay_miss_ms)) < REPLAY_GOAL_MS)
    s.row("`recent(100, search=...)` through the index: text in every row / in one prompt / in none (median)",
          " / ".join(f"{v:.1f}" for v in searches) + " ms", f"< {SEARCH_GOAL_MS:g} ms",
          max(searches) < SEARCH_GOAL_MS)
    s.row("the same search scanning every row, without the index: in one prompt / in none",
          " / ".join(f"{med(v):.0f}" for v in scan_ms) + " ms")
    s.row("worst case for the index: every trigram of the text in every row, the text in none / "
          "a 2-character search (scans)", f"{med(search_ms[WORST]):.0f} / {med(search_ms[SHORT]):.0f} ms")
    s.row("migrating the 100,000-exchange log of layout 2: indexing its rows, at its first open",
          f"{migrate_s:.1f} s")
    s.row("file size: before / after the index (this log's repeated reply)",
          f"{before_mb:.0f} / {after_mb:.0f} MB (+{after_mb - before_mb:.0f} MB, "
          f"+{(after_mb - before_mb) / before_mb * 100:.0f}%)")
    s.row(f"the index on varied text ({VARIED_ROWS:,} exchanges of this repository's text and code)",
          f"+{varied_after - varied_before:.0f} MB on {varied_before:.0f} MB "
          f"(+{(varied_after - varied_before) / varied_before * 100:.0f}%), "
          f"{(varied_after - varied_before) * 1e6 / chars:.1f} bytes per character indexed; "
          f"indexed in {varied_s:.1f} s")
    s.row("`recent(100, model=...)` (a fifth of the rows are that model's)", f"{med(by_model_ms):.2f} ms")
    s.row("`conversation()` of one chat (5,000 exchanges, 500 cells)", f"{med(chat_ms):.1f} ms")
    s.row("`summary()`: tokens, time and cost per model over 100,000", f"{med(summary_ms):.0f} ms")
    s.row("opening the full log (connect, check the layout, WAL) and closing it", f"{med(open_ms):.2f} ms")
    s.note(f"{ROWS:,} exchanges recorded one by one through `LogStore.record` (index off) in {fill:.1f} s "
           f"({fill / ROWS * 1000:.3f} ms each on average, growing file); with the index and "
           f"{len(record_ms):,} more records, the file, with its -wal and -shm, takes {size:.0f} MB. Every "
           "tenth exchange is interrupted, so replay skips it.")
    s.note(f"`record`: {len(record_ms):,} timed calls each way, each its own transaction (WAL, "
           f"synchronous=NORMAL; with the index, the row and its index entry in one); the slowest took "
           f"{max(record_ms):.2f} ms with the index, {max(unindexed_ms):.2f} ms without (WAL checkpoints, FTS5 "
           f"segment merges). `recent`, `find_replay` and the searches: {repeat} timed calls each after one "
           "unmeasured call; the scans without the index: "
           f"{max(5, runs)}.")
    s.note(f"Searches: {EVERYWHERE!r} (every prompt), {ONE_ROW!r} (one prompt), {NOWHERE!r} (none), "
           f"{WORST!r} (each of its trigrams in every reply, the text in none), {SHORT!r} (too short for "
           "trigrams). The index is FTS5 with the trigram tokenizer (detail=full) over prompt and reply; "
           "it proposes the rows holding the text, and the same LIKE / casefold test as the scan decides. "
           "Up to 1,000 such rows are read and sorted; more, and the rows are walked newest first until "
           "100 are found.")
    s.note("The migration runs once, in the first call of the first kernel that opens an older log "
           "(inside one write transaction: another kernel's writes wait for it, at most the 5 s busy "
           "timeout, then say `not logged`). The size of the index depends on the text: the bench's one "
           "repeated reply has few distinct trigrams; the varied sample shows what real text costs.")


def _open_and_close(path: Path) -> None:
    from replicate_magic.store import LogStore

    with LogStore(path) as log:
        log.recent(1)


if __name__ == "__main__":  # a quick run without the rest of the suite
    import sys
    import tempfile

    class _Print:
        def row(self, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
            verdict = "" if met is None else ("met" if met else "MISSED")
            print(f"{what}: {value} {goal} {verdict}")

        def note(self, text: str) -> None:
            print(f"  - {text}")

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
        bench_store(_Print(), runs=5, tmp=Path(folder))
