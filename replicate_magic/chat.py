"""A chat turn from prompt to recorded reply: the layer the magic, the panel and the CLI share.

No IPython here. Conversations live in one ``ConversationStore`` per kernel, so what the
panel discussed, a ``%%replicate -c NAME`` cell continues. A turn is recorded only when its
reply completes; an interrupted or failed turn leaves the conversation as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from .catalog import resolve_model
from .client import ReplicateClient
from .conversation import ConversationStore, Turn, kernel_store
from .errors import ResponseError
from .request import TurnRequest
from .streaming import PredictionStream

__all__ = ["ChatSession", "Metrics", "TurnRequest", "TurnResult"]


@dataclass(frozen=True)
class Metrics:
    model: str
    output_tokens: int | None
    input_tokens: int | None
    time_to_first_token: float | None
    tokens_per_second: float | None
    total_time: float | None
    waited: float | None = None  # seconds the client waited out Replicate's rate limit

    def line(self) -> str:
        parts = [self.model]
        if self.output_tokens is not None:
            parts.append(f"{self.output_tokens} token" + ("" if self.output_tokens == 1 else "s"))
        if self.time_to_first_token is not None:
            parts.append(f"first token {self.time_to_first_token:.2f} s")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tokens/s")
        if self.total_time is not None:
            parts.append(f"{self.total_time:.1f} s")
        if self.waited:
            parts.append(f"waited {self.waited:.1f} s for the rate limit")
        return " · ".join(parts)


@dataclass
class TurnResult:
    text: str
    model: str
    prediction_id: str | None
    metrics: Metrics  # measured by the client; reported_metrics() asks Replicate for its own
    ignored: list[str]  # settings this model does not take
    adjusted: list[str] = field(default_factory=list)  # "temperature 0 raised to 0.01, ..."
    reported: asyncio.Future[Metrics] | None = field(default=None, repr=False)


class ChatSession:
    def __init__(self, conversations: ConversationStore | None = None) -> None:
        self.store = conversations if conversations is not None else kernel_store

    def messages_for(self, request: TurnRequest) -> list[dict[str, str]]:
        """History (unless disabled or starting afresh), the system prompt, then the prompt."""
        conversation = self.store.get(request.chat)
        history: list[dict[str, str]] = []
        if request.use_history and not request.new:
            history = conversation.context(request.max_history, cell_id=request.cell_id)
            history = [m for m in history if m["role"] != "system"]
        system = request.system if request.system is not None else (
            conversation.system if request.use_history and not request.new else None)
        head = [{"role": "system", "content": system}] if system else []
        return head + history + [{"role": "user", "content": request.prompt}]

    async def ask(
        self,
        request: TurnRequest,
        on_token: Callable[[str], None],
        on_log: Callable[[str], None] | None = None,
    ) -> TurnResult:
        client = await ReplicateClient.connect(timeouts=request.timeouts)
        model = resolve_model(request.model)
        stream = PredictionStream(client, model, self.messages_for(request), request.settings, on_log=on_log)
        started = time.monotonic()
        first: float | None = None
        count = 0
        async with aclosing(stream.tokens()) as tokens:
            async for text in tokens:
                if first is None:
                    first = time.monotonic()
                count += 1
                on_token(text)
        elapsed = time.monotonic() - started
        self._record(request, model, stream.text)
        measured = _metrics(model, {}, count, None if first is None else first - started, elapsed,
                            waited=stream.rate_limited_for)
        return TurnResult(
            text=stream.text,
            model=model,
            prediction_id=stream.prediction_id,
            metrics=measured,
            ignored=stream.ignored,
            adjusted=stream.adjusted,
            # Asked for now, awaited later: the request overlaps the caller's final display.
            reported=asyncio.ensure_future(_reported_metrics(stream, measured)),
        )

    async def reported_metrics(self, result: TurnResult) -> Metrics:
        """Replicate's own figures for a finished turn where it gives them, else the client's."""
        return result.metrics if result.reported is None else await result.reported

    def _record(self, request: TurnRequest, model: str, reply: str) -> None:
        if not request.use_history:
            return
        conversation = self.store.get(request.chat)
        if request.new:
            conversation.reset()
        if request.system is not None:
            conversation.set_system(request.system or None)
        conversation.record(Turn(request.prompt, reply, model, request.cell_id))


async def _reported_metrics(stream: PredictionStream, measured: Metrics) -> Metrics:
    try:
        reported = (await stream.final_prediction()).metrics
    except ResponseError:
        return measured  # the reply is complete; metrics are a nicety
    return _metrics(measured.model, reported, measured.output_tokens or 0,
                    measured.time_to_first_token, measured.total_time or 0.0, waited=measured.waited)


def _metrics(
    model: str, reported: Mapping[str, Any], count: int, first: float | None, elapsed: float,
    *, waited: float | None = None,
) -> Metrics:
    """Replicate's own figures where it gives them, else what the client measured."""

    def number(key: str) -> float | None:
        value = reported.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    output = number("output_token_count")
    streamed_for = elapsed - (first or 0.0)
    return Metrics(
        model=model,
        output_tokens=int(output) if output is not None else count,
        input_tokens=None if number("input_token_count") is None else int(number("input_token_count") or 0),
        time_to_first_token=number("time_to_first_token") if number("time_to_first_token") is not None else first,
        tokens_per_second=number("tokens_per_second") or (count / streamed_for if streamed_for > 0 and count else None),
        total_time=number("total_time") or elapsed,
        waited=waited,
    )
