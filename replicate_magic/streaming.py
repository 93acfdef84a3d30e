"""One prediction from its creation to its last token; the layer under the provider and the magic.

It fetches the model's schema, builds the input, creates the prediction, turns the event
stream into text (falling back to polling when the stream cannot be resumed), and, when the
consumer stops early for any reason, cancels the prediction so nothing bills in the dark.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, Mapping

from .client import ReplicateClient, StreamLost
from .errors import ModelError, ReplicateMagicError, ResponseError, StreamError
from .inputs import Settings, build_input, parse_model
from .sse import ServerSentEvent
from .textparts import TextParts

log = logging.getLogger(__name__)
_CANCEL_WAIT = 5.0  # seconds a stopped stream waits for its cancel request
_POLL_INTERVAL = 0.5  # Replicate's clients poll at this rate
TERMINAL = ("succeeded", "failed", "canceled", "aborted")


class PredictionStream:
    """Iterate ``tokens()`` once; afterwards ``prediction``, ``text`` and ``ignored`` tell the rest."""

    def __init__(
        self,
        client: ReplicateClient,
        model: str,
        messages: list[Mapping[str, Any]],
        settings: Settings,
        *,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.messages = messages
        self.settings = settings
        self.on_log = on_log
        self.prediction: dict[str, Any] | None = None
        self.ignored: list[str] = []  # settings the model's schema does not take
        self._received = TextParts()
        self.finished = False  # the prediction reached an end on Replicate

    async def tokens(self) -> AsyncIterator[str]:
        try:
            ref = parse_model(self.model)
            properties = await self.client.input_properties(ref)
            inputs, self.ignored = build_input(self.messages, self.settings, properties)
            if self.ignored:
                log.info("%s does not take %s; not sent", ref, ", ".join(self.ignored))
            try:
                self.prediction = await self.client.create_prediction(ref, inputs)
            except asyncio.CancelledError:
                await self._cancel_unanswered_create()
                raise
            try:
                async with aclosing(self._text()) as tokens:
                    async for token in tokens:
                        self._received.append(token)
                        yield token
            finally:
                if not self.finished:
                    await self.cancel()
        except ReplicateMagicError as error:
            # One boundary for every message built from server text: a model's error, a
            # prediction's error, an echoed request. None may show the token.
            raise self.client.redact(error) from None

    @property
    def text(self) -> str:
        """The text so far."""
        return self._received.value

    async def cancel(self) -> None:
        """Cancel the prediction on Replicate; quietly, because this runs while unwinding."""
        if self.prediction is None or self.finished:
            return
        self.finished = True
        try:
            await asyncio.wait_for(
                asyncio.shield(self.client.cancel_prediction(self.prediction)), _CANCEL_WAIT
            )
        except (ResponseError, asyncio.TimeoutError, asyncio.CancelledError) as error:
            log.warning("could not cancel prediction %s: %s", self.prediction.get("id"), error)

    async def _cancel_unanswered_create(self) -> None:
        """Stopped while the create was under way: it may still make a prediction; cancel it."""
        for exchange in self.client.unanswered_posts:
            try:
                status, _, body = await asyncio.wait_for(exchange, _CANCEL_WAIT)
            except (Exception, asyncio.CancelledError):
                continue  # it failed, or never answered: nothing is known to cancel
            created = _json_object(body) if status < 300 else {}
            if isinstance(created.get("id"), str):
                self.prediction = created
                await self.cancel()

    async def final_prediction(self) -> dict[str, Any]:
        """The prediction as Replicate reports it now (metrics appear once it has ended)."""
        assert self.prediction is not None, "tokens() has not created a prediction yet"
        self.prediction = await self.client.get_prediction(self.prediction)
        return self.prediction

    async def _text(self) -> AsyncIterator[str]:
        assert self.prediction is not None
        if (self.prediction.get("urls") or {}).get("stream"):
            try:
                async with aclosing(self.client.events(self.prediction)) as events:
                    async for event in events:
                        if event.event == "output":  # the hot path: no coroutine per token
                            if event.data:
                                yield event.data
                            continue
                        token = await self._on_event(event)
                        if token:
                            yield token
                if self.finished:
                    return
            except StreamLost as lost:
                log.info("prediction %s: %s; polling instead", self.prediction.get("id"), lost)
        # No stream (a model that does not stream), or one that could not be resumed.
        async with aclosing(poll_text(self.client, self.prediction, self.text)) as tokens:
            async for token in tokens:
                yield token
        self.finished = True

    async def _on_event(self, event: ServerSentEvent) -> str | None:
        if event.event == "output":
            return event.data
        if event.event == "logs":
            if self.on_log is not None and event.data:
                self.on_log(self.client.redact_text(event.data))
        elif event.event == "error":
            self.finished = True
            detail = _detail(event.data)
            raise ModelError(
                f"The model failed: {detail}", detail=detail,
                prediction_id=(self.prediction or {}).get("id"),
            )
        elif event.event == "done":
            self.finished = True
            reason = _json_object(event.data).get("reason")
            if reason:
                # The stream says why it ended early; the prediction says the rest.
                raise_for_final_status(await self.final_prediction())
                raise ResponseError(f"The stream ended early ({reason})", prediction_id=self.prediction_id)
        return None  # unknown events are ignored, as the SSE spec says

    @property
    def prediction_id(self) -> str | None:
        return (self.prediction or {}).get("id")


async def poll_text(
    client: ReplicateClient, prediction: Mapping[str, Any], already: str = ""
) -> AsyncIterator[str]:
    """Text beyond ``already`` by polling ``urls.get``, until the prediction ends."""
    seen, changed_at = already, time.monotonic()
    while True:
        current = await client.get_prediction(prediction)
        text = output_text(current.get("output"))
        if not text.startswith(seen):
            raise StreamError(
                "The stream broke and the output Replicate reports does not continue what "
                "arrived; the answer shown may be incomplete.",
                prediction_id=prediction.get("id"),
            )
        if len(text) > len(seen):
            yield text[len(seen):]
            seen, changed_at = text, time.monotonic()
        status = current.get("status")
        if status in TERMINAL:
            raise_for_final_status(current)
            return
        if time.monotonic() - changed_at > client.timeouts.idle:
            raise StreamError(
                f"No progress for {client.timeouts.idle:g} s: the model stalled.",
                prediction_id=prediction.get("id"),
            )
        await asyncio.sleep(_POLL_INTERVAL)


def output_text(output: Any) -> str:
    """A prediction's output as text: streaming models report a list of chunks."""
    if output is None:
        return ""
    if isinstance(output, list):
        return "".join(str(part) for part in output)
    return str(output)


def raise_for_final_status(prediction: Mapping[str, Any]) -> None:
    status = prediction.get("status")
    if status == "failed":
        raise ModelError(
            f"The model failed: {prediction.get('error') or 'no reason given'}",
            detail=prediction.get("error"), prediction_id=prediction.get("id"),
        )
    if status in ("canceled", "aborted"):
        raise ResponseError(
            f"The prediction was {status} on Replicate before it finished",
            prediction_id=prediction.get("id"),
        )


def _json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(data: str) -> str:
    """An error event's message: JSON with ``detail`` (or ``error``), else the text itself."""
    value = _json_object(data)
    for key in ("detail", "error", "message"):
        if isinstance(value.get(key), str):
            return value[key]
    return data.strip() or "no reason given"
