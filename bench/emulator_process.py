"""The emulator in a process of its own, steered over stdin/stdout (one JSON object a line).

Run by ``bench/run.py`` (never by hand): a separate process, so the server's CPU work does
not share the measured client's GIL. It prints ``{"base_url": ..., "stream_base": ...,
"pid": ...}`` once it listens, then answers each request line with one reply line:

- ``{"op": "tokens", "n": N, "tps": R, "sticky": true}``: the next prediction (every
  prediction while sticky) emits N distinct tokens `` w0``, `` w1``, ... at R tokens/s
  (0 = as fast as the server can); ``"n": null`` turns sticky mode off.
- ``{"op": "last"}``: the most recent prediction: id, status, whole output, token count,
  size of its input as JSON.
- ``{"op": "sent"}``: ``[token, unix time]`` for every output event written to a stream
  socket since the last call (taken right after the write), then forgets them.
- ``{"op": "forget"}``: drops finished predictions and recorded requests (memory).
- ``{"op": "requests"}``: ``[method, path, user agent]`` of every request either server
  received since the last ``forget``.
- ``{"op": "cpu"}``: this process's user+system CPU seconds.
- ``{"op": "create_limit", "rate": R, "burst": B}``: the emulator's create rate limit from now
  on (R creates a minute, B at once; ``"rate": null``: none). It starts at the emulator's 600.
- ``{"op": "creates"}``: ``times`` (``time.monotonic()`` of every create that passed the
  limit), ``throttled`` (how many got 429) and ``peak_in_flight`` (the most predictions
  running at once) since the last call, then forgets them.
- ``{"op": "bulk", "on": true}``: bulk mode for the throughput benchmark (below).
- ``{"op": "quit"}``.

Bulk mode. The emulator generates a token per loop turn and writes each event with its own
``write()``; so served, a 50,000-event stream costs the *server* about 14 us an event and
every client, even a raw byte reader, gets about 50,000 events/s: the benchmark would
measure the emulator. In bulk mode (only for unpaced predictions), the generator appends
events 1,000 at a time and the stream writer sends everything available in one write per
wake-up: the same bytes, the same event ids, fewer system calls and wake-ups, so the
client is the bottleneck. Loopback TCP then hands the client large chunks, as it does
whenever a reader falls behind a writer.

The wrappers below (sticky faults, send times, bulk mode) are measurement instrumentation
that lives here, in the benchmark, not in the package.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicate_magic.emulator import Emulator, Faults
from replicate_magic.emulator import api as api_module
from replicate_magic.emulator import stream as stream_module
from replicate_magic.emulator.faults import FaultBook
from replicate_magic.emulator.prediction import StreamEvent
from replicate_magic.emulator.throttle import TokenBucket
from replicate_magic.emulator.wire import encode_event

TOKEN = "bench-token"
SENT: list[tuple[str, float]] = []
BULK = {"on": False}
_BATCH = 1000


def tokens(n: int) -> list[str]:
    """Distinct, word-sized tokens: " w0", " w1", ..."""
    return [f" w{i}" for i in range(n)]


class StickyFaults(FaultBook):
    """A FaultBook that, while ``sticky`` is set, gives every new prediction those faults."""

    sticky: Faults | None = None

    def take_prediction_faults(self) -> Faults:
        faults = super().take_prediction_faults()
        if faults == Faults() and self.sticky is not None:
            return self.sticky
        return faults


def _record_send_times() -> None:
    original = stream_module._Writer.event

    async def event(self, event):  # type: ignore[no-untyped-def]
        await original(self, event)
        if event.name == "output":
            SENT.append((event.data, time.time()))

    stream_module._Writer.event = event  # type: ignore[method-assign]


def _bulk_mode() -> None:
    original_generate = api_module.generate
    original_pump = stream_module._pump

    async def generate(pred, tokens, tokens_per_second, cold_start):  # type: ignore[no-untyped-def]
        if not BULK["on"] or tokens_per_second > 0 or cold_start > 0 or pred.faults != Faults(
                tokens=pred.faults.tokens, tokens_per_second=pred.faults.tokens_per_second):
            return await original_generate(pred, tokens, tokens_per_second, cold_start)
        pred.add_log(f"Booting model {pred.model}...")  # as the emulator's own generate() does
        pred.add_log("Loading weights... done")
        pred.start_processing()
        pred.first_token_ns = time.time_ns()
        for start in range(0, len(tokens), _BATCH):
            now = int(time.time())
            for token in tokens[start:start + _BATCH]:
                seq = len(pred.events)
                pred.output.append(token)
                pred.events.append(StreamEvent(seq, f"{now}:{seq}", "output", token))
            pred._notify()
            await asyncio.sleep(0)
        pred.finish("succeeded")

    async def pump(request, response, writer, pred, state, drop_after):  # type: ignore[no-untyped-def]
        if not BULK["on"] or drop_after is not None or state.split_writes:
            return await original_pump(request, response, writer, pred, state, drop_after)
        index = stream_module._resume_index(request.headers.get("Last-Event-ID"))
        while True:
            chunk = bytearray()
            done = False
            while index < len(pred.events) and not done:
                event = pred.events[index]
                index += 1
                chunk += encode_event(event.id, event.name, event.data, state.line_ending)
                done = event.name == "done"
            if chunk:
                await response.write(bytes(chunk))
            if done:
                await response.write_eof()
                return response
            if pred.closed or state.closing:
                return await stream_module._drop(request, response, clean=False)
            await pred.wait_change()

    api_module.generate = generate
    stream_module._pump = pump


def main() -> None:
    _record_send_times()
    _bulk_mode()
    emu = Emulator(token=TOKEN).start()
    book = StickyFaults()
    emu._state.faults = book  # instrumentation: see StickyFaults
    loop = emu._loop
    assert loop is not None

    def on_loop(fn):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    def last() -> dict:
        preds = sorted(emu.predictions.values(), key=lambda p: p.created_ns)
        if not preds:
            return {}
        p = preds[-1]
        return {"id": p.id, "status": p.status, "output": "".join(p.output), "tokens": len(p.output),
                "input_chars": len(json.dumps(p.input))}

    def forget() -> dict:
        for key in [k for k, p in emu.predictions.items() if p.terminal]:
            del emu.predictions[key]
        emu.requests.clear()
        return {"ok": True}

    def requests() -> dict:
        return {"requests": [[r.method, r.path, r.headers.get("User-Agent", r.headers.get("user-agent", ""))]
                             for r in emu.requests]}

    def sent() -> dict:
        taken = list(SENT)
        SENT.clear()
        return {"sent": taken}

    def create_limit(rate: float | None, burst: int | None) -> dict:
        emu._state.create_bucket = TokenBucket(rate, burst or max(1, int(rate))) if rate else None
        return {"ok": True}

    def creates() -> dict:
        state = emu._state  # instrumentation: the peak is set back, which the Emulator never does
        taken = {"times": list(state.create_times), "throttled": len(state.throttled),
                 "peak_in_flight": state.peak_in_flight}
        state.create_times.clear()
        state.throttled.clear()
        state.peak_in_flight = state.in_flight
        return taken

    print(json.dumps({"base_url": emu.base_url, "stream_base": emu.stream_base, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            break
        if op == "tokens":
            n, tps = request.get("n"), float(request.get("tps", 0))
            if n is None:
                book.sticky = None
            else:
                faults = Faults(tokens=tokens(n), tokens_per_second=tps)
                if request.get("sticky"):
                    book.sticky = faults
                else:
                    emu.inject(faults)
            reply: dict = {"ok": True}
        elif op == "last":
            reply = on_loop(last)
        elif op == "sent":
            reply = on_loop(sent)
        elif op == "forget":
            reply = on_loop(forget)
        elif op == "create_limit":
            reply = on_loop(lambda r=request: create_limit(r.get("rate"), r.get("burst")))
        elif op == "creates":
            reply = on_loop(creates)
        elif op == "requests":
            reply = on_loop(requests)
        elif op == "bulk":
            BULK["on"] = bool(request["on"])
            reply = {"ok": True}
        elif op == "cpu":
            t = os.times()
            reply = {"cpu": t.user + t.system}
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    emu.close()


if __name__ == "__main__":
    main()
