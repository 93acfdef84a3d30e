"""The stream server (a different host on real Replicate): ``GET /v1/streams/{id}`` as SSE."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .limits import MAX_BODY
from .prediction import Prediction, StreamEvent
from .problems import not_found
from .state import STATE_KEY, EmulatorState, recording_middleware
from .wire import encode_comment, encode_event, split_pieces

__all__ = ["make_stream_app"]

_TERMINAL_EVENTS = ("error", "done")
# Pause between split pieces: without a real gap the client's next read would
# collect all pieces at once and never see an event or character cut in two.
_PIECE_GAP = 0.001


class _Writer:
    """Writes SSE bytes whole, or (split_writes) in tiny flushed pieces."""

    def __init__(self, response: web.StreamResponse, line_ending: str, split: bool) -> None:
        self._response = response
        self._line_ending = line_ending
        self._split = split
        self._turn = 0

    async def raw(self, data: bytes) -> None:
        if not self._split:
            await self._response.write(data)
            return
        for piece in split_pieces(data, self._turn):
            self._turn += 1
            await self._response.write(piece)
            await asyncio.sleep(_PIECE_GAP)

    async def comment(self, text: str) -> None:
        await self.raw(encode_comment(text, self._line_ending))

    async def event(self, event: StreamEvent) -> None:
        await self.raw(encode_event(event.id, event.name, event.data, self._line_ending))


def _resume_index(last_event_id: str | None) -> int:
    """Index of the first event to send: after the ``<time>:<seq>`` id the client saw."""
    if not last_event_id:
        return 0
    _, _, seq = last_event_id.strip().rpartition(":")
    try:
        return max(0, int(seq) + 1)
    except ValueError:
        return 0  # unknown id: replay everything, as a fresh subscriber


async def _drop(request: web.Request, response: web.StreamResponse, clean: bool) -> web.StreamResponse:
    """End the connection without ``done``: abort TCP, or (clean) end the HTTP body."""
    if clean:
        await response.write_eof()
    elif request.transport is not None:
        request.transport.close()  # what is already written still goes out, then FIN mid-body
    return response


async def stream_prediction(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE_KEY]
    pred = state.predictions.get(request.match_info["id"])
    if pred is None or not pred.has_stream:
        return not_found()
    pred.connections += 1
    faults = pred.faults
    drops = faults.drop_after is not None and (pred.connections == 1 or faults.drop_every_connection)
    drop_after = faults.drop_after if drops else None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    writer = _Writer(response, state.line_ending, state.split_writes)
    try:
        await writer.comment("hi")
        return await _pump(request, response, writer, pred, state, drop_after)
    except ConnectionResetError:  # the client went away; the prediction keeps running
        return response


async def _pump(request: web.Request, response: web.StreamResponse, writer: _Writer,
                pred: Prediction, state: EmulatorState, drop_after: int | None) -> web.StreamResponse:
    clean = pred.faults.drop_clean
    index = _resume_index(request.headers.get("Last-Event-ID"))
    outputs = 0
    if drop_after == 0:
        return await _drop(request, response, clean)
    while True:
        while index < len(pred.events):
            event = pred.events[index]
            index += 1
            if event.name in _TERMINAL_EVENTS and drop_after is not None \
                    and pred.faults.drop_every_connection:
                return await _drop(request, response, clean)  # resuming never completes
            await writer.event(event)
            if event.name == "done":
                await response.write_eof()
                return response
            if event.name == "output":
                outputs += 1
                if drop_after is not None and outputs >= drop_after:
                    return await _drop(request, response, clean)
        if pred.closed or state.closing:
            return await _drop(request, response, clean=False)
        await pred.wait_change()


def make_stream_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware("stream")], client_max_size=MAX_BODY)
    app[STATE_KEY] = state
    app.router.add_get("/v1/streams/{id}", stream_prediction)
    return app
