"""One prediction from its creation to its last token; the layer under the provider and the magic.

It fetches the model's schema, builds the input, creates the prediction, turns the event
stream into text (falling back to polling when the stream cannot be resumed), and, when the
consumer stops early for any reason, cancels the prediction so nothing bills in the dark.
Whether that cancel worked is kept in ``cancel_outcome`` (and reported to any
``cancels.StopReport`` watching). Waits for Replicate's rate limit are told to ``on_log`` as
they start and summed in ``rate_limited_for``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from .answers import server_text
from .attachments import attachments_in
from .cancels import CancelOutcome
from .client import OnWait, RateLimitWait, ReplicateClient, StreamLost
from .environment import DEFAULT_BASE_URL
from .errors import ModelError, ReplicateMagicError, ResponseError, StreamError
from .inputs import ModelRef, Settings, build_input, fit_to_schema, guess_note, parse_model
from .outputs import file_urls, progress_of
from .prediction import Prediction
from .schemas import ModelSchema, SchemaUnavailableError
from .sse import ServerSentEvent
from .textparts import TextParts
from .uploads import sendable

log = logging.getLogger(__name__)
_POLL_INTERVAL = 0.5  # Replicate's clients poll at this rate
_FIRST_POLL = 0.1


class PredictionStream:
    """Iterate ``tokens()`` once; afterwards ``prediction``, ``text``, ``ignored``, ``adjusted``,
    ``schema``, ``rate_limited_for`` and ``cancel_outcome`` tell the rest.

    ``on_log`` hears the model's log lines and the client's waits for a rate limit.
    """

    def __init__(
        self,
        client: ReplicateClient,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: Settings,
        *,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.messages = list(messages)
        self.settings = settings
        self.on_log = on_log
        self.prediction: Prediction | None = None
        self.inputs: dict[str, Any] | None = None  # the input sent (or to be sent), once prepared
        self.schema: ModelSchema | None = None  # None for a bare version id
        self.ignored: list[str] = []  # settings the model's schema does not take
        self.adjusted: list[str] = []  # settings moved into the model's range, or keys guessed, said as notes
        self.rate_limited_for = 0.0  # seconds waited for Replicate's rate limit
        self._received = TextParts()
        self.ended = False  # the prediction was seen to reach an end on Replicate
        self.cancel_outcome: CancelOutcome | None = None  # set when a cancel was needed

    async def prepare(self) -> dict[str, Any]:
        """The exact input a prediction would get (from the model's schema); nothing is created.

        ``tokens()`` calls it first; calling it before lets a caller look the input up in
        the local log and replay instead of asking again.
        """
        if self.inputs is None:
            try:
                ref = parse_model(self.model)
                try:
                    self.schema = await self.client.model_schema(ref, on_wait=self._on_wait)
                except ResponseError as error:
                    raise self._unknown_model(ref, error) from None
                self.inputs = self._inputs(ref)
            except ReplicateMagicError as error:
                raise self.client.redact(error) from None
        return self.inputs

    async def tokens(self) -> AsyncGenerator[str, None]:
        inputs = await self.prepare()
        try:
            ref = parse_model(self.model)
            # Files become data URIs or uploads only now: self.inputs (the log, replay) keeps references.
            sent = await sendable(self.client, inputs, attachments_in(self.settings.extra, self.settings.images))
            # Stopped while this is under way, the client cancels what it makes (in the background).
            try:
                self.prediction = await self.client.create_prediction(ref, sent, on_wait=self._on_wait)
            except ResponseError as error:
                raise self._unknown_model(ref, error) from None
            try:
                async with aclosing(self._text()) as tokens:
                    async for token in tokens:
                        self._received.append(token)
                        yield token
            finally:
                await self.cancel()
        except ReplicateMagicError as error:
            # One boundary for every message built from server text: a model's error, a
            # prediction's error, an echoed request. None may show the token.
            raise self.client.redact(error) from None

    def _inputs(self, ref: ModelRef) -> dict[str, Any]:
        inputs, self.ignored, self.adjusted = input_for(ref, self.messages, self.settings, self.schema)
        if self.ignored:
            log.info("%s does not take %s; not sent", ref, ", ".join(self.ignored))
        return inputs

    def _on_wait(self, wait: RateLimitWait) -> None:
        self.rate_limited_for += wait.seconds
        log.info("%s: %s", self.model, wait)
        if self.on_log is not None:
            self.on_log(str(wait))

    def _tell(self, line: str) -> None:
        if self.on_log is not None:
            self.on_log(line)

    def _unknown_model(self, ref: ModelRef, error: ResponseError) -> ResponseError:
        """A 404 for the model (or deployment) itself says which; Replicate's own body is generic."""
        if error.status != 404 or isinstance(error, SchemaUnavailableError):  # that one already says
            return error
        where = "" if self.client.base_url == DEFAULT_BASE_URL else (
            f" at {self.client.base_url} (REPLICATE_BASE_URL; is that the API you meant?)")
        if ref.deployment:  # a deployment belongs to one account: the account matters as much as the name
            return ResponseError(
                f"Replicate has no deployment {ref.slug}{where}: HTTP 404. Next: check its name and "
                "account on replicate.com/deployments (-m deployments/owner/name).",
                status=404, title=error.title, detail=error.detail)
        return ResponseError(
            f"Replicate has no model {ref}{where}: HTTP 404. Next: check the model name "
            "(owner/name or owner/name:version; %replicate models lists some).",
            status=404, title=error.title, detail=error.detail)

    @property
    def text(self) -> str:
        """The text so far."""
        return self._received.value

    @property
    def prediction_id(self) -> str | None:
        return None if self.prediction is None else self.prediction.id

    async def cancel(self) -> CancelOutcome | None:
        """Cancel the prediction on Replicate unless it ended; the outcome says whether that worked.

        None when there was nothing to cancel. Never raises a ResponseError: this runs while
        unwinding. If the caller is cancelled meanwhile, the cancel still runs to its end.
        """
        if self.prediction is None or self.ended:
            return self.cancel_outcome
        if self.cancel_outcome is None or not self.cancel_outcome.cancelled:
            self.cancel_outcome = await self.client.cancel_prediction(self.prediction)  # a failure is logged there
        return self.cancel_outcome

    async def final_prediction(self) -> Prediction:
        """The prediction as Replicate reports it now (metrics appear once it has ended)."""
        assert self.prediction is not None, "tokens() has not created a prediction yet"
        self.prediction = await self.client.get_prediction(self.prediction, on_wait=self._on_wait)
        if self.prediction.terminal:
            self._seen_to_end()
        return self.prediction

    def _seen_to_end(self) -> None:
        self.ended = True
        if self.prediction is not None:
            self.client.ended(self.prediction)

    @property
    def makes_files(self) -> bool:
        """The model's schema says its output is files (images, audio...)."""
        return self.schema is not None and self.schema.output == "files"

    async def output_files(self) -> list[str] | None:
        """Once ``tokens()`` ended: the output files' URLs, one per output; None for text.

        The schema says so (the prediction was polled to its end), or, for a model whose
        schema declares no text output (a bare version id), a streamed "text" that is
        nothing but https or ``data:`` URLs, which the finished prediction then confirms.
        """
        if self.prediction is None:
            return None
        kind = "other" if self.schema is None else self.schema.output
        if kind == "files":
            return file_urls(self.prediction.output, kind)
        streamed = self.text.strip()
        if kind == "text" or not streamed or any(c.isspace() for c in streamed) \
                or not streamed.lower().startswith(("https://", "data:")):
            return None
        try:
            return file_urls((await self.final_prediction()).output, kind)
        except ResponseError:
            return None  # it stays the text it streamed

    async def _text(self) -> AsyncGenerator[str, None]:
        assert self.prediction is not None
        if self.makes_files:
            # Its output is whole files, known when it ends; the status tells how far it is.
            self.prediction = await poll_until_done(self.client, self.prediction, self._tell, on_wait=self._on_wait)
            self._seen_to_end()
            return
        if self.prediction.urls.stream:
            try:
                async with aclosing(self.client.events(self.prediction)) as events:
                    async for event in events:
                        if event.event == "output":  # the hot path: no coroutine per token
                            if event.data:
                                yield event.data
                            continue
                        await self._on_event(event)
                if self.ended:
                    return
            except StreamLost as lost:
                log.info("prediction %s: %s; polling instead", self.prediction_id, lost)
        # No stream (a model that does not stream), or one that could not be resumed.
        async with aclosing(poll_text(self.client, self.prediction, self.text, on_wait=self._on_wait,
                                      on_status=self._tell)) as tokens:
            async for token in tokens:
                yield token
        self._seen_to_end()

    async def _on_event(self, event: ServerSentEvent) -> None:
        if event.event == "logs":
            if self.on_log is not None and event.data:
                self.on_log(self.client.redact_text(event.data))
        elif event.event == "error":
            self._seen_to_end()
            detail = server_text(_detail(event.data), self.client.redact_text)
            raise ModelError(f"The model failed: {detail}", detail=detail, prediction_id=self.prediction_id)
        elif event.event == "done":
            self._seen_to_end()
            reason = _json_object(event.data).get("reason")
            if reason:
                # The stream says why it ended early; the prediction says the rest.
                (await self.final_prediction()).raise_for_status(self.client.redact_text)
                said = (server_text(reason, self.client.redact_text, 80) if isinstance(reason, str)
                        else "no reason given")
                raise ResponseError(f"The stream ended early ({said})", prediction_id=self.prediction_id)
        # Unknown events are ignored, as the SSE spec says.


def input_for(
    ref: ModelRef, messages: Sequence[Mapping[str, Any]], settings: Settings, schema: ModelSchema | None,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The input for the model's declared keys, checked against its bounds, with the settings
    it does not take and the notes on what was adjusted; keys are guessed (and a note says
    so) only where no schema declares any. The same messages, settings and schema always
    give the same input: the local log finds replays by it."""
    properties = None if schema is None else schema.properties
    if schema is not None and schema.output == "files":
        # A model that makes files is not a chat: it gets the prompt (and a system prompt), no history.
        messages = [m for m in messages[:-1] if m.get("role") == "system"] + list(messages[-1:])
    inputs, ignored = build_input(list(messages), settings, properties, model=str(ref))
    if properties is not None:
        inputs, adjusted = fit_to_schema(inputs, properties)
    else:
        why = "no schema for a bare version id" if schema is None else f"{ref} declares no input schema"
        adjusted = [guess_note(inputs, why)]
    return inputs, ignored, adjusted


def status_line(prediction: Prediction, elapsed: float) -> str:
    """What a prediction that does not stream is doing: "booting the model · 12 s",
    "processing · 23/50 steps (46%) · 4 s"."""
    if prediction.status == "starting":
        return f"starting (the model may be booting) · {elapsed:.0f} s"
    parts = [prediction.status or "waiting"]
    steps = progress_of(prediction.logs)
    if steps is not None:
        done, total = steps
        filled = 10 * done // total
        parts.append(f"{'█' * filled}{'░' * (10 - filled)} {done}/{total} steps ({100 * done // total}%)")
    parts.append(f"{elapsed:.0f} s")
    return " · ".join(parts)


async def poll_until_done(
    client: ReplicateClient, prediction: Prediction, on_status: Callable[[str], None], *,
    on_wait: OnWait | None = None,
) -> Prediction:
    """Poll ``urls.get`` until the prediction ends, telling its status; the finished prediction.

    Raises the model's failure; a prediction whose logs and status stay the same for the
    idle limit has stalled (it is cancelled by the caller, as any stopped prediction).
    """
    started = changed_at = time.monotonic()
    last: tuple[str | None, str | None] = (None, None)
    pause = _FIRST_POLL  # a fast model is done in a second: look soon, then settle at Replicate's pace
    while True:
        current = await client.get_prediction(prediction, on_wait=on_wait)
        now = time.monotonic()
        if (current.status, current.logs) != last:
            last, changed_at = (current.status, current.logs), now
        if current.terminal:
            client.ended(current)
            current.raise_for_status(client.redact_text)
            return current
        on_status(status_line(current, now - started))
        if now - changed_at > client.timeouts.idle:
            raise StreamError(f"No progress for {client.timeouts.idle:g} s: the model stalled.",
                              prediction_id=prediction.id)
        await asyncio.sleep(pause)
        pause = min(_POLL_INTERVAL, pause * 1.5)


async def poll_text(
    client: ReplicateClient, prediction: Prediction, already: str = "", *, on_wait: OnWait | None = None,
    on_status: Callable[[str], None] | None = None,
) -> AsyncGenerator[str, None]:
    """Text beyond ``already`` by polling ``urls.get``, until the prediction ends."""
    seen, changed_at, started = already, time.monotonic(), time.monotonic()
    while True:
        current = await client.get_prediction(prediction, on_wait=on_wait)
        if on_status is not None and not seen and not current.terminal:
            on_status(status_line(current, time.monotonic() - started))
        text = current.text()
        if not text.startswith(seen):
            raise StreamError(
                "The stream broke and the output Replicate reports does not continue what "
                "arrived; the answer shown may be incomplete.",
                prediction_id=prediction.id,
            )
        if len(text) > len(seen):
            yield text[len(seen):]
            seen, changed_at = text, time.monotonic()
        if current.terminal:
            client.ended(current)
            current.raise_for_status(client.redact_text)
            return
        if time.monotonic() - changed_at > client.timeouts.idle:
            raise StreamError(
                f"No progress for {client.timeouts.idle:g} s: the model stalled.",
                prediction_id=prediction.id,
            )
        await asyncio.sleep(_POLL_INTERVAL)


def _json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _detail(data: str) -> str:
    """An error event's message: JSON with ``detail`` (or ``error``), else the text itself."""
    value = _json_object(data)
    for key in ("detail", "error", "message"):
        if isinstance(value.get(key), str):
            return str(value[key])
    return data.strip() or "no reason given"
