"""A prediction's state, its event log (what streams replay) and its generation task."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .faults import Faults

__all__ = ["Prediction", "StreamEvent", "TERMINAL", "new_prediction_id", "iso", "generate"]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_DONE_REASON = {"succeeded": None, "failed": "error", "canceled": "canceled", "aborted": "canceled"}


def new_prediction_id() -> str:
    """26 lowercase base32 characters, the shape of real ids (e.g. gm3qorzdhgbfurvjtvhg6dckhu)."""
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")


def iso(ns: int | None, digits: int = 6) -> str | None:
    """ISO 8601 UTC with a Z. Real timestamps mix micro- and nanosecond precision."""
    if ns is None:
        return None
    whole = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    fraction = f"{ns % 1_000_000_000:09d}"[:digits]
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction}Z"


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    id: str
    name: str
    data: str


@dataclass(eq=False)
class Prediction:
    """Server-side state. Public: id, model, version, input, status, output, logs,
    error, metrics, connections (stream connections opened so far)."""

    id: str
    model: str
    version: str
    input: dict[str, Any]
    faults: Faults = field(default_factory=Faults, repr=False)
    status: str = "starting"
    output: list[str] = field(default_factory=list)
    logs: str = ""
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    connections: int = 0
    has_stream: bool = True
    input_token_count: int = 0
    webhook: str | None = None
    input_bytes: int = 0  # size of the create request's body: roughly what keeping this costs
    single_output: bool = False  # Output is one value (a URI), not an array: output is output[0]
    token_metrics: bool = True  # language models report token counts; image and audio ones time
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    deployment: str | None = None  # "owner/name" when created through a deployment
    created_ns: int = field(default_factory=time.time_ns)
    started_ns: int | None = None
    completed_ns: int | None = None
    first_token_ns: int | None = None
    deadline_ns: int | None = None
    events: list[StreamEvent] = field(default_factory=list, repr=False)
    closed: bool = False  # the emulator is shutting down: streams must end
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    deadline_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    on_end: Callable[[], None] | None = field(default=None, repr=False)
    """Called once: when the prediction reaches a terminal status, or is stopped unfinished."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    # -- event log ----------------------------------------------------------
    def _emit(self, name: str, data: str) -> None:
        seq = len(self.events)
        self.events.append(StreamEvent(seq, f"{int(time.time())}:{seq}", name, data))
        self._notify()

    def _notify(self) -> None:
        # Wake every waiting stream; they re-read `events` from their own index.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self) -> None:
        await self._changed.wait()

    async def wait_finished(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def shutdown(self) -> None:
        """The emulator is closing: stop generating and wake streams so they end."""
        self.closed = True
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        if self.task is not None:
            self.task.cancel()
        self._ended()
        self._finished.set()  # release `Prefer: wait` requests
        self._notify()

    # -- lifecycle ----------------------------------------------------------
    def add_log(self, line: str) -> None:
        self.logs += line + "\n"
        self._emit("logs", line)

    def start_processing(self) -> None:
        self.status = "processing"
        self.started_ns = time.time_ns()

    def add_token(self, token: str) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.time_ns()
        self.output.append(token)
        self._emit("output", token)

    def expire(self) -> None:
        """Cancel-After reached: `aborted` if it never started, else `canceled`."""
        self.finish("aborted" if self.status == "starting" else "canceled")

    def finish(self, status: str, error: str | None = None) -> None:
        """Move to a terminal status and tell the streams (no-op when already terminal)."""
        if self.terminal:
            return
        self.status, self.error = status, error
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        self.completed_ns = time.time_ns()
        self.metrics = self._metrics()
        self._ended()
        if error is not None:
            self.add_log(f"Traceback (most recent call last):\nRuntimeError: {error}")
            self._emit("error", json.dumps({"detail": error}))
        reason = _DONE_REASON[status]
        self._emit("done", json.dumps({"reason": reason} if reason else {}))
        self._finished.set()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()  # cancel stops the model; closing a stream does not

    def _ended(self) -> None:
        callback, self.on_end = self.on_end, None
        if callback is not None:
            callback()

    def _metrics(self) -> dict[str, Any]:
        assert self.completed_ns is not None
        start = self.started_ns or self.completed_ns
        metrics: dict[str, Any] = {
            "predict_time": (self.completed_ns - start) / 1e9,
            "total_time": (self.completed_ns - self.created_ns) / 1e9,
        }
        metrics.update(self.extra_metrics)
        if not self.token_metrics:  # sdxl's recorded metrics are {"predict_time": ...} alone
            return metrics
        metrics["input_token_count"] = self.input_token_count
        metrics["output_token_count"] = len(self.output)
        if self.first_token_ns is not None:
            generating = (self.completed_ns - self.first_token_ns) / 1e9
            metrics["time_to_first_token"] = (self.first_token_ns - start) / 1e9
            metrics["tokens_per_second"] = len(self.output) / generating if generating > 0 else 0.0
        return metrics

    def as_json(self, base_url: str, stream_base: str, for_create: bool = False) -> dict[str, Any]:
        """The prediction as the API sends it, with the keys real answers have at each stage.

        From replicate-python's tests/cassettes: the answer to a create never has
        ``started_at``, ``completed_at`` or ``metrics``, not even when ``Prefer: wait`` brings
        it back ``processing`` (test_models_predictions_create_blocking[*].yaml, 2024-10);
        a get or cancel has ``started_at`` only once started and ``completed_at`` and
        ``metrics`` only once finished (test_run_without_token.yaml, predictions-get.yaml,
        predictions-cancel.yaml). Keys newer than those cassettes come from Replicate's
        current OpenAPI document: ``urls.web`` (required there), ``deadline``, ``source``
        (that one also in a 2026 create answer quoted in a public repository).
        """
        api = f"{base_url}/v1/predictions/{self.id}"
        urls = {"cancel": f"{api}/cancel", "get": api}
        if self.has_stream:
            urls["stream"] = f"{stream_base}/v1/streams/{self.id}"
        urls["web"] = f"https://replicate.com/p/{self.id}"
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self._output(),
            "data_removed": False,
            "error": self.error,
            "source": "api",
            "status": self.status,
            # Milliseconds, as in every answer since 2024 (the cassettes, a 2025 webhook body).
            "created_at": iso(self.created_ns, 3),
        }
        if not for_create and self.started_ns is not None:
            body["started_at"] = iso(self.started_ns, 9)
        if not for_create and self.terminal:
            body["completed_at"] = iso(self.completed_ns, 9)
        body["urls"] = urls
        if not for_create and self.terminal:
            body["metrics"] = dict(self.metrics)
        if self.deadline_ns is not None:
            body["deadline"] = iso(self.deadline_ns, 6)
        if self.webhook is not None:
            body["webhook"] = self.webhook
        if self.deployment is not None:  # the OpenAPI prediction schema's `deployment`
            body["deployment"] = self.deployment
        return body

    def _output(self) -> Any:
        if not self.output:
            return None
        return self.output[0] if self.single_output else list(self.output)


async def generate(pred: Prediction, tokens: list[str], tokens_per_second: float,
                   cold_start: float) -> None:
    """The model run: boot logs, `starting` for `cold_start` s, then paced tokens.

    The injected log lines (``Faults.logs``) come after the boot lines, half-way through
    the cold start. Runs as its own task, independent of any stream connection.
    """
    faults = pred.faults
    pred.add_log(f"Booting model {pred.model}...")
    await asyncio.sleep(cold_start / 2)
    pred.add_log("Loading weights... done")
    for line in faults.logs or ():
        pred.add_log(line)
    await asyncio.sleep(cold_start / 2)
    pred.start_processing()
    delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
    clock = asyncio.get_running_loop().time
    began = clock()
    for index in range(len(tokens) + 1):
        if faults.stall_after == index:
            await asyncio.Event().wait()  # until cancel (or shutdown) cancels this task
        if faults.error_after == index:
            pred.finish("failed", faults.error_message)
            return
        if index == len(tokens):
            break
        # Each token at its own time from the start, as a model on its own GPU makes them: a
        # busy emulator catches up rather than drifting later with every token. (0 still
        # yields, so streams interleave with generation.)
        await asyncio.sleep(max(0.0, began + (index + 1) * delay - clock()))
        pred.add_token(tokens[index])
    pred.finish("succeeded")
