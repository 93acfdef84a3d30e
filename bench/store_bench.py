"""Benchmark 9, the local log (replicate_magic.store): run by bench/run.py (``--only 9``).

A log of 100,000 exchanges is filled through ``LogStore.record`` (realistic sizes: a prompt of
about 250 characters, a 1,200-character reply, the model input with its template and
settings, Replicate's metrics), in a file of its own under the benchmark's temporary
directory. Then, on that full log: what one more ``record`` costs, ``recent()`` (what
``%replicate log`` shows), ``find_replay`` (what a ``--cache`` cell asks before any request),
and for information ``recent`` filtered by model or text, ``conversation``, ``summary`` and
opening the file.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROWS = 100_000
MODELS = ("meta/meta-llama-3-70b-instruct", "meta/meta-llama-3-8b-instruct", "mistralai/mixtral-8x7b-instruct-v0.1",
          "openai/gpt-4o-mini", "anthropic/claude-3.7-sonnet")
REPLY = ("The tide comes in across the sand, and every wave writes something new; " * 20)[:1200]
RECORD_GOAL_MS, RECENT_GOAL_MS, REPLAY_GOAL_MS = 2.0, 100.0, 5.0


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


def bench_store(s: Any, runs: int, tmp: Path, **_: Any) -> None:
    from replicate_magic.store import LogStore

    path = tmp / "store-bench" / "log.db"
    with LogStore(path) as log:
        start = time.perf_counter()
        for i in range(ROWS):
            log.record(exchange_for(i))
        fill = time.perf_counter() - start
        gc.collect()
        more = iter(range(ROWS, ROWS + 10_000))
        record_ms = timed_ms(lambda: log.record(exchange_for(next(more))), 2_000)
        hit = exchange_for(ROWS // 2 + 1)  # a succeeded exchange from the middle of the log
        repeat = max(20, 10 * runs)
        recent_ms = timed_ms(lambda: log.recent(100), repeat)
        replay_hit_ms = timed_ms(lambda: log.find_replay(hit.model, dict(reversed(hit.input.items()))), repeat)
        replay_miss_ms = timed_ms(lambda: log.find_replay(hit.model, {"prompt": "never asked"}), repeat)
        by_model_ms = timed_ms(lambda: log.recent(100, model=MODELS[2]), repeat)
        common_ms = timed_ms(lambda: log.recent(100, search="WHY?"), repeat)
        rare_ms = timed_ms(lambda: log.recent(100, search="Question 77777:"), max(5, runs))
        absent_ms = timed_ms(lambda: log.recent(100, search="no such words anywhere"), max(5, runs))
        chat_ms = timed_ms(lambda: log.conversation("chat-7"), max(5, runs))
        summary_ms = timed_ms(log.summary, max(5, runs))
        assert log.find_replay(hit.model, hit.input) is not None
    size = sum(p.stat().st_size for p in path.parent.iterdir()) / 1e6
    open_ms = timed_ms(lambda: _open_and_close(path), max(5, runs))

    med = statistics.median
    s.row("`record`: one more exchange into a log of 100,000 (median / p95)",
          f"{med(record_ms):.3f} / {p95(record_ms):.3f} ms", f"< {RECORD_GOAL_MS:g} ms",
          p95(record_ms) < RECORD_GOAL_MS)
    s.row("`recent(100)` over 100,000 exchanges (median / p95)", f"{med(recent_ms):.2f} / {p95(recent_ms):.2f} ms",
          f"< {RECENT_GOAL_MS:g} ms", p95(recent_ms) < RECENT_GOAL_MS)
    s.row("`find_replay` over 100,000 exchanges: found / not found (median)",
          f"{med(replay_hit_ms):.3f} / {med(replay_miss_ms):.3f} ms", f"< {REPLAY_GOAL_MS:g} ms",
          max(med(replay_hit_ms), med(replay_miss_ms)) < REPLAY_GOAL_MS)
    s.row("`recent(100, model=...)` (a fifth of the rows are that model's)", f"{med(by_model_ms):.2f} ms")
    s.row("`recent(100, search=...)`: a word in every reply / in one prompt / in none (full scan)",
          f"{med(common_ms):.2f} / {med(rare_ms):.0f} / {med(absent_ms):.0f} ms")
    s.row("`conversation()` of one chat (5,000 exchanges, 500 cells)", f"{med(chat_ms):.1f} ms")
    s.row("`summary()`: tokens, time and cost per model over 100,000", f"{med(summary_ms):.0f} ms")
    s.row("opening the full log (connect, check the layout, WAL) and closing it", f"{med(open_ms):.2f} ms")
    s.note(f"{ROWS:,} exchanges recorded one by one through `LogStore.record` in {fill:.1f} s "
           f"({fill / ROWS * 1000:.3f} ms each on average, growing file); the file, with its -wal and -shm, "
           f"takes {size:.0f} MB. Every tenth exchange is interrupted, so replay skips it.")
    s.note(f"`record`: {len(record_ms):,} timed calls after the fill, each its own transaction (WAL, "
           f"synchronous=NORMAL); the slowest took {max(record_ms):.2f} ms (a WAL checkpoint). `recent`, "
           f"`find_replay` and the filtered listings: {repeat} timed calls each after one unmeasured call.")
    s.note("Text search uses LIKE for ASCII text (case-insensitive in SQLite itself) and a Python casefold "
           "for other scripts; with no match it reads every row, so its cost grows with the log.")


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
