"""A chat turn from prompt to recorded reply: the layer the magic, the panel and the CLI share.

No IPython here. Conversations live in one ``ConversationStore`` per kernel, so what the
panel discussed, a ``%%replicate -c NAME`` cell continues. A turn is recorded only when its
reply completes; an interrupted or failed turn leaves the conversation as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .catalog import resolve_model
from .client import ReplicateClient
from .conversation import ConversationStore, Turn, kernel_store
from .environment import base_url
from .errors import InvalidAnswerError, NotInLogError, ReplicateMagicError, ResponseError
from .files import FileOutput, fetch_files
from .inputs import parse_model, structured_input
from .journal import LogGroup, Replay, TurnLog
from .pricing import estimate, format_cost
from .request import TurnRequest
from .schemas import SchemaCache, default_schemas
from .store import Exchange, LogStore, StoreError, utc_now
from .streaming import PredictionStream
from .structured import InvalidAnswer, retry_messages

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
    cost: str = ""  # "≈ $0.0012" where the model's price is known (pricing.py); never a guess
    cost_usd: float | None = None  # the same as a number, for totals (a batch's)
    files: int | None = None  # a model that makes files: how many (its time counts, not tokens)
    predict_time: float | None = None  # seconds the model ran, as Replicate reports it

    def line(self) -> str:
        parts = [self.model]
        if self.files is not None:
            parts.append(f"{self.files} file" + ("" if self.files == 1 else "s"))
            if self.predict_time is not None:
                parts.append(f"ran {self.predict_time:.1f} s")
        elif self.output_tokens is not None:
            parts.append(f"{self.output_tokens} token" + ("" if self.output_tokens == 1 else "s"))
        if self.time_to_first_token is not None and self.files is None:
            parts.append(f"first token {self.time_to_first_token:.2f} s")
        if self.tokens_per_second is not None and self.files is None:
            parts.append(f"{self.tokens_per_second:.1f} tokens/s")
        if self.total_time is not None:
            parts.append(f"{self.total_time:.1f} s")
        if self.waited:
            parts.append(f"waited {self.waited:.1f} s for the rate limit")
        if self.cost:
            parts.append(self.cost)
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
    replayed: str | None = None  # when the logged reply shown was made: "2026-12-01 16:22 UTC"
    problems: list[str] = field(default_factory=list)  # the local log's failures, one line each
    files: list[FileOutput] | None = None  # a model that makes files: one per output, in order
    one_file: bool = False  # its output is one file, not a list (what --out receives)
    # A JSON answer asked for (TurnRequest.settings.answer): the object read from the text, or
    # why the text is not that answer ("$.age: 'x' is not of type 'integer'").
    data: Any = None
    parsed: bool = False
    invalid: str | None = None

    @property
    def value(self) -> Any:
        """What ``--out`` receives: the text, the object of a JSON answer, or the file (or
        list of files) the model made."""
        if self.parsed:
            return self.data
        if self.files is None:
            return self.text
        return self.files[0] if self.one_file and len(self.files) == 1 else list(self.files)


class ChatSession:
    """Turns on the kernel's conversations; with a ``log``, each exchange is logged there and
    requests the log already answered may be replayed from it (``TurnRequest.replay``)."""

    def __init__(self, conversations: ConversationStore | None = None, *, log: LogStore | None = None,
                 prices: Mapping[str, Any] | None = None, schemas: SchemaCache | None = None) -> None:
        self.store = conversations if conversations is not None else kernel_store
        self.log = log
        self.prices = dict(prices or {})  # the user's price overrides (pricing.py)
        self.schemas = schemas if schemas is not None else default_schemas
        self.log_group: LogGroup | None = None  # while a batch runs: its exchanges are logged together

    def reset(self, name: str) -> list[str]:
        """Empty conversation ``name``, here and for a later restore from the log; returns the
        log's failure, if any, as one line (the conversation is emptied either way)."""
        self.store.reset(name)
        return self._mark_reset(name)

    def _mark_reset(self, name: str) -> list[str]:
        if self.log is None:
            return []
        try:
            self.log.record_reset(name)
        except StoreError as error:
            return [f"not logged: {error}"]
        return []

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
        on_retry: Callable[[str], None] | None = None,
    ) -> TurnResult:
        """One turn: the reply streams to ``on_token``, and is recorded once complete.

        When ``request.settings.answer`` asks for JSON (``-f json``, ``--schema``), the reply
        is read as that JSON (``TurnResult.data``) and recorded only when valid. An invalid one
        is asked again (``answer.retries`` times, once by default): the same messages, then the
        invalid answer and what is wrong with it; ``on_retry`` hears the reason before each new
        try (the text streamed so far is then superseded). Still invalid: ``InvalidAnswerError``
        with the last reply's text, and the conversation unchanged. Every try is a prediction,
        logged (an invalid one as failed, so it is never replayed or restored).
        """
        result = await self._turn(request, on_token, on_log)
        answer = request.settings.answer
        if answer is None or result.files is not None:
            return result
        follow_up: list[dict[str, str]] = []
        reasons: list[str] = []
        while result.invalid is not None and len(reasons) < answer.retries:
            reasons.append(result.invalid)
            await self.reported_metrics(result)  # the invalid exchange is logged before the next one
            if on_retry is not None:
                on_retry(result.invalid)
            follow_up += retry_messages(result.text, result.invalid)
            result = await self._turn(request, on_token, on_log, follow_up)
        if result.invalid is not None:
            await self.reported_metrics(result)
            tries = len(reasons) + 1
            raise InvalidAnswerError(
                f"The reply is not the {answer.label} asked for" + (f", {tries} times" if tries > 1 else "")
                + f": {result.invalid}.", raw=result.text, reason=result.invalid, tries=tries)
        if reasons:
            result.adjusted.append(f"asked again: the first answer was not valid ({reasons[0]})")
        return result

    async def _turn(
        self,
        request: TurnRequest,
        on_token: Callable[[str], None],
        on_log: Callable[[str], None] | None = None,
        follow_up: Sequence[Mapping[str, str]] = (),
    ) -> TurnResult:
        """One prediction (or replay) for the request's messages, then ``follow_up`` (a retry's)."""
        model = resolve_model(request.model)
        ref = parse_model(model)
        messages = self.messages_for(request) + [dict(m) for m in follow_up]
        journal = None if self.log is None else TurnLog(self.log, self.schemas, base_url(), self.log_group)
        # A schema kept in the log spares a fresh kernel the schema request (and lets it replay).
        schema = journal.known_schema(ref) if journal is not None and ref.slug is not None else None
        known = journal is not None and (ref.slug is None or schema is not None)
        if journal is not None and request.replay in ("on", "only"):
            replay = journal.find(ref, model, messages, request.settings, schema) if known else None
            if replay is not None:
                return self._replayed(request, model, replay, journal, on_token)
            if request.replay == "only":
                what = (f"no reply of {model} to this exact input" if known
                        else f"nothing of {model} yet, not even its schema")
                raise NotInLogError(
                    f"Not in the log: {what}, and cache = 'only' asks "
                    "Replicate nothing. Next: run it once with --cache (or cache = True), or use --refresh."
                )
        client = await ReplicateClient.connect(timeouts=request.timeouts, schemas=self.schemas,
                                               create_rate=request.create_rate)
        stream = PredictionStream(client, model, messages, request.settings, on_log=on_log)
        if journal is not None and request.replay == "on" and not known:
            await stream.prepare()  # the schema was not known offline; now the input is
            replay = journal.find(ref, model, messages, request.settings, stream.schema)
            if replay is not None:
                return self._replayed(request, model, replay, journal, on_token)
        started = time.monotonic()
        first: float | None = None
        count = 0
        try:
            async with aclosing(stream.tokens()) as tokens:
                async for text in tokens:
                    if first is None:
                        first = time.monotonic()
                    count += 1
                    on_token(text)
        except BaseException as error:  # logged as it ended (never replayed), then on its way
            if journal is not None and stream.prediction is not None:
                status = "failed" if isinstance(error, ReplicateMagicError) else "interrupted"
                journal.record(self._exchange(request, journal, stream, status, {}))
            raise
        urls = await stream.output_files()
        files = None if urls is None else await self._fetch(request, stream, urls, client.base_url)
        elapsed = time.monotonic() - started
        parsed, data, invalid = _read_answer(request, stream.text) if urls is None else (False, None, None)
        # A file model's turn is not a chat turn, nor is an invalid answer: the conversation stays as it was.
        problems = self._record(request, model, stream.text) if urls is None and invalid is None else []
        measured = _metrics(model, {}, count, None if first is None else first - started, elapsed,
                            waited=stream.rate_limited_for, files=None if files is None else len(files))
        if journal is not None and stream.schema is not schema:  # fetched now: keep it for the next kernel
            journal.save_schema(ref, stream.schema)
        result = TurnResult(
            text=stream.text,
            model=model,
            prediction_id=stream.prediction_id,
            metrics=measured,
            ignored=stream.ignored,
            adjusted=stream.adjusted,
            problems=problems + ([] if journal is None else journal.problems),
            files=files,
            one_file=files is not None and not isinstance(stream.prediction and stream.prediction.output, list),
            data=data, parsed=parsed, invalid=invalid,
        )
        if files is not None:
            result.text = ""
        elif request.settings.answer is not None:
            result.adjusted = [*result.adjusted, _how_sent(request, stream)]
        # Asked for now, awaited later: the request overlaps the caller's final display. The
        # exchange is logged with Replicate's own metrics once they are in.
        result.reported = asyncio.ensure_future(self._finish(request, stream, measured, journal, files,
                                                             result.one_file, "failed" if invalid else "succeeded"))
        return result

    async def _fetch(self, request: TurnRequest, stream: PredictionStream, urls: list[str],
                     api_base: str) -> list[FileOutput]:
        """Each output file, downloaded once (concurrently) without the token; a file that
        cannot be fetched is kept with its problem, the others stand."""
        save_dir = Path(request.save_dir) if request.save_dir else None
        return await fetch_files(urls, api_base=api_base, timeouts=request.timeouts, embed_limit=request.embed_limit,
                                 save_dir=save_dir, prefix=f"{stream.prediction_id}-" if stream.prediction_id else "")

    def _replayed(self, request: TurnRequest, model: str, replay: Replay, journal: TurnLog,
                  on_token: Callable[[str], None]) -> TurnResult:
        """The logged reply, shown and recorded like any turn; nothing is asked or billed."""
        logged = replay.exchange
        parsed, data, invalid = _read_answer(request, logged.reply) if replay.files is None else (False, None, None)
        if replay.files is None:
            on_token(logged.reply)
            if invalid is None:
                journal.problems += self._record(request, model, logged.reply)
        journal.record(replace(logged, time=utc_now(), chat=_chat(request), prompt=request.prompt,
                               cell_id=request.cell_id, notebook=request.notebook, replayed=True, id=None,
                               status="failed" if invalid else logged.status))
        output = logged.metrics.get("output_token_count")
        files = replay.files
        return TurnResult(
            text=logged.reply if files is None else "", model=model, prediction_id=logged.prediction_id,
            metrics=Metrics(model, output if isinstance(output, int) else None, None, None, None, None,
                            files=None if files is None else len(files)),
            ignored=replay.ignored, adjusted=replay.adjusted, replayed=replay.when, problems=journal.problems,
            files=files, one_file=bool(logged.files and logged.files[0].get("one_file")),
            data=data, parsed=parsed, invalid=invalid,
        )

    async def _finish(self, request: TurnRequest, stream: PredictionStream, measured: Metrics,
                      journal: TurnLog | None, files: list[FileOutput] | None = None,
                      one_file: bool = False, status: str = "succeeded") -> Metrics:
        reported: Mapping[str, Any] = {}
        try:
            reported = (await stream.final_prediction()).metrics
        except ResponseError:
            pass  # the reply is complete; metrics are a nicety
        if journal is not None:
            journal.record(self._exchange(request, journal, stream, status, reported,
                                          journal.keep_files(files, one_file) if files is not None else []))
        if not reported:
            return measured
        hardware = stream.schema.hardware if stream.schema is not None else None  # a deployment's
        cost = estimate(measured.model, reported, overrides=self.prices, hardware=hardware)
        return _metrics(measured.model, reported, measured.output_tokens or 0, measured.time_to_first_token,
                        measured.total_time or 0.0, waited=measured.waited, cost=format_cost(cost),
                        cost_usd=None if cost is None else cost.amount,
                        files=measured.files)

    def _exchange(self, request: TurnRequest, journal: TurnLog, stream: PredictionStream, status: str,
                  metrics: Mapping[str, Any], files: list[dict[str, Any]] | None = None) -> Exchange:
        system = stream.messages[0]["content"] if stream.messages and stream.messages[0]["role"] == "system" else None
        return Exchange(
            chat=_chat(request), prompt=request.prompt, system=system, model=journal.logged_model(stream.model),
            version=parse_model(stream.model).version or (stream.schema.version if stream.schema else None),
            input=stream.inputs or {}, reply="\n".join(f["url"] for f in files) if files else stream.text,
            files=files or [], metrics=dict(metrics), prediction_id=stream.prediction_id, status=status,
            cell_id=request.cell_id, notebook=request.notebook,
        )

    async def reported_metrics(self, result: TurnResult) -> Metrics:
        """Replicate's own figures for a finished turn where it gives them, else the client's."""
        return result.metrics if result.reported is None else await result.reported

    def _record(self, request: TurnRequest, model: str, reply: str) -> list[str]:
        """Record the finished turn in its conversation; the log's failure to mark a --new, if any."""
        if not request.use_history or not request.record:
            return []
        conversation = self.store.get(request.chat)
        problems = []
        if request.new:
            conversation.reset()
            problems = self._mark_reset(request.chat)
        if request.system is not None:
            conversation.set_system(request.system or None)
        conversation.record(Turn(request.prompt, reply, model, request.cell_id))
        return problems


def _read_answer(request: TurnRequest, text: str) -> tuple[bool, Any, str | None]:
    """(parsed, the object, why it is invalid) of a reply, when the request asks for JSON."""
    answer = request.settings.answer
    if answer is None:
        return False, None, None
    try:
        return True, answer.read(text), None
    except InvalidAnswer as error:
        return False, None, str(error)


def _how_sent(request: TurnRequest, stream: PredictionStream) -> str:
    """The note under a JSON answer: what it was checked against, and how the schema was sent."""
    answer = request.settings.answer
    assert answer is not None
    if answer.schema is None:
        return "read as JSON"
    properties = stream.schema.properties if stream.schema is not None else None
    carried = structured_input(properties, answer)
    where = f"in its {carried[0]} input" if carried else "in the prompt (the model has no structured-output input)"
    return f"checked against {answer.label}, sent {where}"


def _chat(request: TurnRequest) -> str:
    """The conversation an exchange belongs to; "" for a turn it does not record (one-shot, side
    by side), which no restore brings back."""
    return request.chat if request.use_history and request.record else ""


def _metrics(
    model: str, reported: Mapping[str, Any], count: int, first: float | None, elapsed: float,
    *, waited: float | None = None, cost: str = "", files: int | None = None, cost_usd: float | None = None,
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
        cost=cost,
        cost_usd=cost_usd,
        files=files,
        predict_time=number("predict_time"),
    )
