"""Every read from the network is bounded, and every malformed answer is one line.

Against hostile servers on 127.0.0.1 (``tests/hostile.py``), through
``Replicate.create_async_generator`` and ``ChatSession.ask``. Caps are shown by the bytes
the server managed to write before the client stopped reading, never by the client's
memory; hangs by an error within a generous bound.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from replicate_magic import Replicate, ResponseError
from replicate_magic.cancels import StopReport
from replicate_magic.chat import ChatSession, TurnRequest
from replicate_magic.conversation import ConversationStore
from replicate_magic.errors import StreamError

from .conftest import TOKEN
from .hostile import (
    PREDICTION_ID,
    Hostile,
    deep_json,
    endless,
    event_stream,
    gzip_bomb,
    json_answer,
)

MODEL = "someone/model"
HI = [{"role": "user", "content": "Hi"}]
MiB = 1024 * 1024
SENT = 50 * MiB  # what a hostile route tries to send


async def collect(server: Hostile, **kwargs) -> str:
    generator = Replicate.create_async_generator(MODEL, HI, api_key=TOKEN, base_url=server.url, **kwargs)
    return "".join([token async for token in generator])


def assert_one_clean_line(error: BaseException) -> None:
    """What any %xmode shows: our one line, no frames, no chained aiohttp error, no token."""
    assert isinstance(error, ResponseError)
    assert error._render_traceback_() == [f"{type(error).__name__}: {error}"]
    assert "\n" not in str(error) and TOKEN not in str(error)
    assert error.__cause__ is None and (error.__suppress_context__ or error.__context__ is None)


# -- size caps ----------------------------------------------------------------------------------


async def test_a_stream_line_that_never_ends_is_given_up_at_its_cap():
    flood = endless("stream", b"event: output\ndata: ", b"x" * 65536, total=SENT, content_type="text/event-stream")
    with (
        Hostile(stream=flood) as server,
        pytest.raises(StreamError, match="a line of more than 16 MiB without ending it") as caught,
    ):
        await collect(server)
    assert_one_clean_line(caught.value)
    assert server.written["stream"] < 32 * MiB  # the cap and what sockets buffer, far from 50 MB
    assert server.cancels == [PREDICTION_ID]


async def test_data_lines_that_never_dispatch_are_given_up_at_the_event_cap():
    line = b"data: " + b"x" * 1000 + b"\n"
    flood = endless("stream", b"event: output\n", line * 64, total=SENT, content_type="text/event-stream")
    with (
        Hostile(stream=flood) as server,
        pytest.raises(StreamError, match="an event of more than 16 MiB without ending it"),
    ):
        await collect(server)
    assert server.written["stream"] < 32 * MiB
    assert server.cancels == [PREDICTION_ID]


async def test_a_huge_json_answer_is_not_read_past_its_cap():
    flood = endless("create", b'{"id": "x", "output": "', b"x" * 65536, total=SENT, content_type="application/json")
    with (
        Hostile(create=flood) as server,
        pytest.raises(ResponseError, match="with more than 8 MiB; it was not read further") as caught,
    ):
        await collect(server)
    assert_one_clean_line(caught.value)
    assert server.written["create"] < 24 * MiB


async def test_a_gzip_bomb_is_not_inflated_past_the_cap():
    bomb = gzip_bomb(300 * MiB)
    assert len(bomb) < MiB  # about 300 KB on the wire

    async def bombed(server: Hostile, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, status=201, headers=headers)

    with (
        Hostile(create=bombed) as server,
        pytest.raises(ResponseError, match="with more than 8 MiB; it was not read further"),
    ):
        await asyncio.wait_for(collect(server), 20)


# -- time limits ----------------------------------------------------------------------------------


async def trickled(server: Hostile, request: web.Request) -> web.StreamResponse:
    """The create's answer, one byte every 0.2 s: never idle, never done."""
    response = web.StreamResponse(status=201, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for byte in json.dumps(server.prediction()).encode():
        if not await server.write("create", response, bytes([byte])):
            break
        await asyncio.sleep(0.2)
    return response


async def test_a_json_answer_trickled_byte_by_byte_hits_the_total_limit():
    with (
        Hostile(create=trickled) as server,
        pytest.raises(ResponseError, match=r"did not answer POST /v1/models/someone/model/predictions within 1 s"),
    ):
        await asyncio.wait_for(collect(server, timeout=1), 10)
    assert 0 < server.written["create"] < len(json.dumps(server.prediction()))


async def slow_tokens(server: Hostile, request: web.Request) -> web.StreamResponse:
    response = await event_stream(request)
    for index in range(8):
        await server.write("stream", response, f"event: output\ndata: t{index}\n\n".encode())
        await asyncio.sleep(0.3)
    await server.write("stream", response, b"event: done\ndata: {}\n\n")
    return response


async def test_a_stream_longer_than_the_timeout_is_fine_while_it_is_not_idle():
    with Hostile(stream=slow_tokens) as server:
        assert await collect(server, timeout=1) == "".join(f"t{index}" for index in range(8))  # 2.4 s in all
    assert server.cancels == []


# -- malformed answers ------------------------------------------------------------------------------


def stream_url(server: Hostile) -> str:
    return f"{server.url}/v1/streams/{PREDICTION_ID}"


MALFORMED_WITH_ID = [
    pytest.param(lambda s: {"id": PREDICTION_ID, "urls": "http://127.0.0.1/"}, "urls is not an object",
                 id="urls-string"),
    pytest.param(lambda s: {"id": PREDICTION_ID, "urls": {"stream": 5}}, "urls.stream is not a string",
                 id="stream-number"),
    pytest.param(lambda s: {"id": PREDICTION_ID, "urls": {"stream": stream_url(s).replace("//", "//user:pw@")}},
                 "urls.stream is not usable: it holds a user name or password", id="userinfo"),
    pytest.param(lambda s: {"id": PREDICTION_ID, "urls": {"stream": "http://[::1"}}, "urls.stream is not usable",
                 id="unparsable-url"),
    pytest.param(lambda s: {"id": PREDICTION_ID, "status": ["running"]}, "status is not a string", id="status-list"),
    pytest.param(lambda s: {"id": PREDICTION_ID, "metrics": [1, 2]}, "metrics is not an object", id="metrics-list"),
]


@pytest.mark.parametrize(("answer", "problem"), MALFORMED_WITH_ID)
async def test_a_malformed_prediction_is_one_line_and_still_cancelled(answer, problem):
    async def create(server: Hostile, request: web.Request) -> web.StreamResponse:
        return web.json_response(answer(server), status=201)

    with Hostile(create=create) as server, pytest.raises(ResponseError) as caught:
        await collect(server)
    assert_one_clean_line(caught.value)
    assert problem in str(caught.value) and f"prediction {PREDICTION_ID} was cancelled" in str(caught.value)
    assert server.cancels == [PREDICTION_ID]  # by the id, on the API's own origin
    assert server.seen("/v1/streams") == []


MALFORMED = [
    pytest.param(json_answer({"urls": {}}), "answered without a valid prediction id", id="no-id"),
    pytest.param(json_answer({"id": 42}), "answered without a valid prediction id", id="id-number"),
    pytest.param(json_answer({"id": "../../v1/account"}), "answered without a valid prediction id", id="id-path"),
    pytest.param(json_answer('{"id": "x", "a": ' + deep_json(100_000) + "}"), "nested more than 64 levels deep",
                 id="deep-100000"),
    pytest.param(json_answer('{"id": "x", "a": ' + deep_json(200) + "}"), "nested more than 64 levels deep",
                 id="deep-200"),
    pytest.param(json_answer('{"id": "x", "metrics": {"total_time": NaN}}'), "not a JSON object", id="nan"),
    pytest.param(json_answer("[1, 2]"), "not a JSON object", id="array"),
    pytest.param(json_answer("<html>oops</html>"), "not a JSON object", id="html-201"),
]


@pytest.mark.parametrize(("create", "problem"), MALFORMED)
async def test_a_malformed_create_answer_is_one_line(create, problem):
    with Hostile(create=create) as server, pytest.raises(ResponseError, match=problem) as caught:
        await collect(server)
    assert_one_clean_line(caught.value)
    assert server.cancels == []  # no valid id: nothing can be cancelled


@pytest.mark.parametrize(("get_body", "tokens"), [
    pytest.param('{"id": "%s", "status": "succeeded", "metrics": [3]}', None, id="metrics-list"),
    pytest.param('{"id": "%s", "status": "succeeded", "metrics": {"output_token_count": Infinity}}', None,
                 id="infinity"),
    pytest.param('{"id": "%s", "status": "succeeded", "metrics": {"output_token_count": 1e999}}', None,
                 id="overflow"),
    pytest.param('{"id": "%s", "status": "succeeded", "metrics": {"output_token_count": "many"}}', None,
                 id="string"),
    pytest.param('{"id": "%s", "status": "succeeded", "metrics": {"output_token_count": 42}}', 42, id="valid"),
])
async def test_malformed_metrics_fall_back_to_what_the_client_measured(get_body, tokens, monkeypatch):
    with Hostile(get=json_answer(get_body % PREDICTION_ID, status=200)) as server:
        monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
        monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
        session = ChatSession(ConversationStore())
        result = await session.ask(TurnRequest("Hi", model=MODEL, use_history=False), on_token=lambda token: None)
        reported = await session.reported_metrics(result)
    assert result.text == "Hi"
    assert reported.output_tokens == (tokens if tokens is not None else result.metrics.output_tokens)


async def test_retry_after_in_other_digits_is_a_plain_backoff():
    answers = iter([web.json_response({"detail": "throttled"}, status=429, headers={"Retry-After": "²"})])

    async def throttled_once(server: Hostile, request: web.Request) -> web.StreamResponse:
        return next(answers, None) or web.json_response(server.prediction(), status=201)

    with Hostile(create=throttled_once) as server:
        assert await collect(server) == "Hi"
    assert len(server.seen("/v1/models/someone/model/predictions")) == 2


async def test_an_error_event_with_a_huge_detail_is_shortened():
    async def failing(server: Hostile, request: web.Request) -> web.StreamResponse:
        response = await event_stream(request)
        detail = json.dumps({"detail": "GPU melted " + "x" * 100_000})
        await server.write("stream", response, f"event: error\ndata: {detail}\n\n".encode())
        return response

    with (
        Hostile(stream=failing) as server,
        pytest.raises(ResponseError, match=r"The model failed: GPU melted x+…$") as caught,
    ):
        await collect(server)
    assert len(str(caught.value)) < 400
    assert server.cancels == []  # it failed on its own


async def test_a_cancel_answered_with_a_long_prediction_still_counts():
    async def stalls(server: Hostile, request: web.Request) -> web.StreamResponse:
        response = await event_stream(request)
        await server.write("stream", response, b"event: output\ndata: Hi\n\n")
        await asyncio.sleep(30)
        return response

    async def long_answer(server: Hostile, request: web.Request) -> web.StreamResponse:
        server.cancels.append(request.match_info["id"])
        output = ["word "] * 100_000  # a long reply: about 900 KB of JSON
        return web.json_response(server.prediction(status="canceled", output=output))

    stops = StopReport()
    with Hostile(stream=stalls, cancel=long_answer) as server, stops.watching():
        stream = Replicate.create_async_generator(MODEL, HI, api_key=TOKEN, base_url=server.url)
        assert await stream.__anext__() == "Hi"
        await stream.aclose()
    assert server.cancels == [PREDICTION_ID] and stops.message() == "cancelled"


@pytest.mark.parametrize("problem", [
    pytest.param("[" * 60_000, id="deep-body"),
    pytest.param('{"title": ' + "[" * 900 + "]" * 900 + ', "detail": "bad input", "status": 422}', id="deep-title"),
])
async def test_a_problem_body_nested_absurdly_deep_is_one_line(problem):
    with (
        Hostile(create=json_answer(problem, status=422)) as server,
        pytest.raises(ResponseError, match="HTTP 422") as caught,
    ):
        await collect(server)
    assert_one_clean_line(caught.value)
