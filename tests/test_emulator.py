"""Tests of the offline Replicate emulator, over real sockets (no mocks).

Most tests talk raw HTTP (aiohttp / urllib) so they check the wire format itself;
a few run Replicate's official `replicate` client unchanged against it.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
import replicate
from hypothesis import given, settings
from hypothesis import strategies as st
from replicate.exceptions import ReplicateError

from replicate_magic.emulator import Emulator, Faults, Prediction, RecordedRequest
from replicate_magic.emulator.hosts import host_allowed
from replicate_magic.emulator.limits import PredictionStore
from replicate_magic.emulator.models import MODELS
from replicate_magic.emulator.responder import respond, tokenize
from replicate_magic.emulator.validation import parse_cancel_after, validate_input
from replicate_magic.emulator.wire import encode_event, split_pieces

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LLAMA = "meta/meta-llama-3-70b-instruct"
LLAMA_PROPS = MODELS[LLAMA].properties
ROOT = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------
@dataclass
class Event:
    id: str
    event: str
    data: str


def parse_sse(raw: bytes) -> tuple[list[Event], list[str]]:
    """A strict, spec-following SSE parser (independent of the package's own)."""
    events: list[Event] = []
    comments: list[str] = []
    lines = re.split(r"\r\n|\r|\n", raw.decode("utf-8"))[:-1]  # last piece is unterminated
    ev_id, name, data = "", "", []
    for line in lines:
        if not line:
            if data or name:
                events.append(Event(ev_id, name or "message", "\n".join(data)))
            name, data = "", []
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                ev_id = value
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return events, comments


def outputs(events: list[Event]) -> list[str]:
    return [e.data for e in events if e.event == "output"]


@pytest.fixture
def emu() -> Any:
    with Emulator(token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(emu: Emulator) -> Any:
    transport = httpx.HTTPTransport()  # ours, so the test can close its sockets
    yield replicate.Client(api_token=TOKEN, base_url=emu.base_url, transport=transport)
    transport.close()


async def create(session: aiohttp.ClientSession, emu: Emulator, model: str = LLAMA,
                 input: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"input": input if input is not None else {"prompt": "Hi"}, **extra}
    async with session.post(f"{emu.base_url}/v1/models/{model}/predictions",
                            json=body, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def read_stream(session: aiohttp.ClientSession, url: str,
                      last_event_id: str | None = None) -> tuple[bytes, bool, int]:
    """(body, ended cleanly, number of chunks received)."""
    headers = {**AUTH, "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    body, chunks = b"", 0
    async with session.get(url, headers=headers) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        try:
            async for chunk in r.content.iter_any():
                body, chunks = body + chunk, chunks + 1
        except aiohttp.ClientPayloadError:
            return body, False, chunks
    return body, True, chunks


async def stream_all(session: aiohttp.ClientSession, url: str) -> list[Event]:
    raw, clean, _ = await read_stream(session, url)
    assert clean
    return parse_sse(raw)[0]


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, Any]:
    async with session.get(url, headers=AUTH) as r:
        return r.status, r.headers, await r.json(content_type=None)


async def wait_status(session: aiohttp.ClientSession, pred: dict[str, Any],
                      statuses: tuple[str, ...] = ("succeeded", "failed", "canceled")) -> dict[str, Any]:
    for _ in range(500):
        _, _, body = await get_json(session, pred["urls"]["get"])
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"prediction stayed {body['status']}")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(AUTH if headers is None else headers)})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def assert_problem(status: int, headers: dict[str, str], raw: bytes, expected: int) -> dict[str, Any]:
    assert status == expected
    assert headers["Content-Type"].startswith("application/problem+json")
    body = json.loads(raw)
    assert body["status"] == expected
    return body


NOT_FOUND = {"detail": "Not found.", "status": 404}
# The keys of real prediction answers, in their order (see Prediction.as_json for the cassettes).
CREATED_KEYS = ["id", "model", "version", "input", "logs", "output", "data_removed", "error", "source",
                "status", "created_at", "urls"]
STARTING_KEYS = CREATED_KEYS
PROCESSING_KEYS = [*CREATED_KEYS[:-1], "started_at", "urls"]
FINISHED_KEYS = [*CREATED_KEYS[:-1], "started_at", "completed_at", "urls", "metrics"]


# -- creating predictions ----------------------------------------------------------
async def test_create_official_model(emu: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{emu.base_url}/v1/models/{LLAMA}/predictions",
                            json={"input": {"prompt": "Hi"}, "stream": True}, headers=AUTH) as r:
        assert r.status == 201
        assert int(r.headers["ratelimit-remaining"]) > 0 and "ratelimit-reset" in r.headers
        pred = await r.json()
    assert re.fullmatch(r"[a-z0-9]{26}", pred["id"])
    assert list(pred) == CREATED_KEYS  # no started_at / completed_at / metrics keys, not even null
    assert (pred["model"], pred["version"], pred["status"]) == (LLAMA, "hidden", "starting")
    assert pred["output"] is None and pred["error"] is None and pred["data_removed"] is False
    assert pred["source"] == "api" and pred["input"] == {"prompt": "Hi"} and pred["logs"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pred["created_at"])  # milliseconds
    urls = pred["urls"]
    assert list(urls) == ["cancel", "get", "stream", "web"]
    assert urls["get"] == f"{emu.base_url}/v1/predictions/{pred['id']}"
    assert urls["cancel"] == urls["get"] + "/cancel"
    assert urls["web"] == f"https://replicate.com/p/{pred['id']}"
    assert urls["stream"] == f"{emu.stream_base}/v1/streams/{pred['id']}"
    assert emu.stream_base.rsplit(":", 1)[1] != emu.base_url.rsplit(":", 1)[1]
    recorded = emu.requests[0]
    assert recorded == RecordedRequest(
        "api", "POST", f"/v1/models/{LLAMA}/predictions", recorded.headers, recorded.body,
        len(recorded.body))
    assert recorded.json == {"input": {"prompt": "Hi"}, "stream": True} and not recorded.truncated


@pytest.mark.parametrize("spelling", ["id", "ref:id", "ref"])
def test_create_by_version(emu: Emulator, spelling: str) -> None:
    model = MODELS["mistralai/mixtral-8x7b-instruct-v0.1"]
    version = {"id": model.version_id, "ref:id": f"{model.ref}:{model.version_id}",
               "ref": model.ref}[spelling]
    status, _, raw = http("POST", f"{emu.base_url}/v1/predictions",
                          {"version": version, "input": {"prompt": "Hi"}})
    assert status == 201
    pred = json.loads(raw)
    assert pred["model"] == model.ref
    assert pred["version"] == ("hidden" if spelling == "ref" else model.version_id)
    assert emu.predictions[pred["id"]].model == model.ref


@pytest.mark.parametrize("version", ["f" * 64, f"{LLAMA}:{'0' * 64}", "nobody/nothing"])
def test_unknown_version_is_422(emu: Emulator, version: str) -> None:
    status, headers, raw = http("POST", f"{emu.base_url}/v1/predictions", {"version": version, "input": {}})
    assert_problem(status, headers, raw, 422)
    # Byte for byte as quoted from real answers: title, detail, status in that order.
    assert raw == json.dumps({
        "title": "Invalid version or not permitted",
        "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)",
        "status": 422}).encode()


def test_request_errors(emu: Emulator) -> None:
    # Every 404 is the one generic body, naming nothing (as Replicate's for a missing model).
    for method, url in [("POST", f"{emu.base_url}/v1/models/nobody/nothing/predictions"),
                        ("GET", f"{emu.base_url}/v1/models/nobody/nothing"),
                        ("GET", f"{emu.base_url}/v1/models/{LLAMA}/versions/{'0' * 64}"),
                        ("GET", f"{emu.base_url}/v1/predictions/nosuchprediction"),
                        ("POST", f"{emu.base_url}/v1/predictions/nosuchprediction/cancel"),
                        ("GET", f"{emu.base_url}/v1/nothing-here"),
                        ("GET", f"{emu.stream_base}/v1/streams/nosuchprediction")]:
        status, headers, raw = http(method, url, {"input": {}} if method == "POST" else None)
        assert (status, raw) == (404, json.dumps(NOT_FOUND).encode()), url
        assert headers["Content-Type"].startswith("application/problem+json")
    assert not emu.predictions


def test_body_validation_words_errors_as_replicate(emu: Emulator) -> None:
    """Top-level errors have the field "" and no "<field>: " in the detail; required keys first."""
    by_model = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    _, _, raw = http("POST", by_model, {"inptu": {"prompt": "x"}})
    assert raw == json.dumps({
        "detail": "- input is required\n- Additional property inptu is not allowed\n",
        "status": 422, "title": "Input validation failed",
        "invalid_fields": [
            {"type": "required", "field": "", "description": "input is required"},
            {"type": "additional_property_not_allowed", "field": "",
             "description": "Additional property inptu is not allowed"}]}).encode()
    # The version route: the same words as a real answer for a body naming "model" instead.
    body = assert_problem(*http("POST", f"{emu.base_url}/v1/predictions", {"model": LLAMA, "input": {}}), 422)
    assert body["detail"] == "- version is required\n- Additional property model is not allowed\n"
    body = assert_problem(*http("POST", by_model, {"input": {"prompt": "x"}, "version": "x", "max_tokens": 3}), 422)
    assert [f["description"] for f in body["invalid_fields"]] == [
        "Additional property version is not allowed", "Additional property max_tokens is not allowed"]
    # Types come from the body schema: a version must be a string, input an object, and so on.
    cases = [
        ({"version": 42, "input": {}}, "version", "Invalid type. Expected: string, given: integer"),
        ({"version": MODELS[LLAMA].version_id, "input": []}, "input",
         "Invalid type. Expected: object, given: array"),
        ({"version": MODELS[LLAMA].version_id, "input": {"prompt": "x"}, "stream": "yes"}, "stream",
         "Invalid type. Expected: boolean, given: string"),
    ]
    for sent, field, description in cases:
        body = assert_problem(*http("POST", f"{emu.base_url}/v1/predictions", sent), 422)
        assert body["invalid_fields"] == [{"type": "invalid_type", "field": field, "description": description}]
        assert body["detail"] == f"- {field}: {description}\n"
    body = assert_problem(*http("POST", by_model, {"input": {"prompt": "x"},
                                                   "webhook_events_filter": ["start", "finish"]}), 422)
    assert body["invalid_fields"] == [{
        "type": "enum", "field": "webhook_events_filter.1", "description":
        'webhook_events_filter.1 must be one of the following: "start", "output", "logs", "completed"'}]
    body = assert_problem(*http("POST", by_model, [1]), 422)
    assert body["detail"] == "- Invalid type. Expected: object, given: array\n"
    assert not emu.predictions


def test_authentication(emu: Emulator) -> None:
    url = f"{emu.base_url}/v1/account"
    expected = {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                "status": 401}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "},
                    {"Authorization": TOKEN}):
        assert assert_problem(*http("GET", url, headers=headers), 401) == expected
    assert http("GET", url, headers={"Authorization": f"Token {TOKEN}"})[0] == 200
    status, _, raw = http("GET", url)
    assert status == 200 and json.loads(raw)["username"] == "emulator"
    # The stream host checks the token too (real clients send it there).
    status, _, raw = http("POST", f"{emu.base_url}/v1/models/{LLAMA}/predictions", {"input": {"prompt": "x"}})
    stream_url = json.loads(raw)["urls"]["stream"]
    assert_problem(*http("GET", stream_url, headers={}), 401)
    with Emulator(token=None) as anyone:
        assert http("GET", f"{anyone.base_url}/v1/account", headers={"Authorization": "Bearer x"})[0] == 200
        assert http("GET", f"{anyone.base_url}/v1/account", headers={})[0] == 401


def test_input_validation(emu: Emulator) -> None:
    claude = f"{emu.base_url}/v1/models/anthropic/claude-3.7-sonnet/predictions"
    status, headers, raw = http("POST", claude, {"input": {"prompt": "x", "max_tokens": 100}})
    assert_problem(status, headers, raw, 422)
    # Byte for byte in the shape of real answers: detail, status, title, invalid_fields.
    assert raw == json.dumps({
        "detail": "- input.max_tokens: Must be greater than or equal to 1024\n",
        "status": 422,
        "title": "Input validation failed",
        "invalid_fields": [{"type": "number_gte", "field": "input.max_tokens",
                            "description": "Must be greater than or equal to 1024"}],
    }).encode()
    body = assert_problem(*http("POST", claude, {"input": {"max_tokens": "many"}}), 422)
    assert [(f["type"], f["field"]) for f in body["invalid_fields"]] == [
        ("required", "input"), ("invalid_type", "input.max_tokens")]
    assert body["detail"] == ("- input: prompt is required\n"
                              "- input.max_tokens: Invalid type. Expected: integer, given: string\n")
    llama = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    body = assert_problem(*http("POST", llama, {"input": {"prompt": "x", "temperature": 9, "top_k": 1.5}}), 422)
    assert body["invalid_fields"] == [
        {"type": "number_lte", "field": "input.temperature", "description": "Must be less than or equal to 5"},
        {"type": "invalid_type", "field": "input.top_k",
         "description": "Invalid type. Expected: integer, given: number"}]
    # A bound written 5.0 in the schema reads "5", as real answers print bounds.
    llama2 = f"{emu.base_url}/v1/models/meta/llama-2-70b-chat/predictions"
    body = assert_problem(*http("POST", llama2, {"input": {"prompt": "x", "temperature": 0.001, "top_p": 2}}), 422)
    assert [f["description"] for f in body["invalid_fields"]] == [
        "Must be greater than or equal to 0.01", "Must be less than or equal to 1"]
    # Unknown keys are ignored (as Cog does) and the input is kept as sent.
    status, _, raw = http("POST", llama, {"input": {"prompt": "x", "max_new_tokens": 5, "top_k": 3.0}})
    assert status == 201 and json.loads(raw)["input"] == {"prompt": "x", "max_new_tokens": 5, "top_k": 3.0}
    # The enum message names the property, not its full path (as in real answers).
    schema = {"properties": {"mode": {"type": "string", "enum": ["a", "b"]},
                             "modes": {"type": "array", "items": {"enum": ["a"]}}}}
    assert [e.as_json() for e in validate_input({"mode": "c", "modes": ["a", "z"]}, schema)] == [
        {"type": "enum", "field": "input.mode", "description": 'mode must be one of the following: "a", "b"'},
        {"type": "enum", "field": "input.modes.1", "description": 'modes.1 must be one of the following: "a"'}]


# -- streams -----------------------------------------------------------------------
async def test_stream_events(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu)
    async with session.get(pred["urls"]["stream"], headers={**AUTH, "Accept": "text/event-stream"}) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-store"
        raw = await r.read()
    events, comments = parse_sse(raw)
    assert comments == ["hi"] and raw.startswith(b": hi\n")
    assert [e.event for e in events[:2]] == ["logs", "logs"] and "Booting" in events[0].data
    assert events[-1].event == "done" and json.loads(events[-1].data) == {}
    assert {e.event for e in events[2:-1]} == {"output"}
    seqs = [int(e.id.split(":")[1]) for e in events]
    assert seqs == list(range(len(events)))
    assert all(re.fullmatch(r"\d{10}:\d+", e.id) for e in events)
    server_side = emu.predictions[pred["id"]]
    assert outputs(events) == server_side.output and server_side.status == "succeeded"
    assert server_side.connections == 1
    stream_req = [r for r in emu.requests if r.server == "stream"]
    assert stream_req[0].path == f"/v1/streams/{pred['id']}"
    assert stream_req[0].headers["Authorization"] == f"Bearer {TOKEN}"
    # Connecting after the end replays everything, then done.
    assert await stream_all(session, pred["urls"]["stream"]) == events


EDGE_TOKENS = ["", "\n", "a\nb", " leading space", "é😀", "x\r\ny", "\n\n", "end"]


async def test_multiline_and_odd_tokens(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(tokens=EDGE_TOKENS))
    pred = await create(session, emu)
    raw, clean, _ = await read_stream(session, pred["urls"]["stream"])
    assert clean
    assert b"event: output\ndata: a\ndata: b\n\n" in raw
    assert b"event: output\ndata: \ndata: \n\n" in raw  # a lone "\n" token
    assert b"data:  leading space\n" in raw
    assert "data: é😀\n".encode() in raw
    expected = [t.replace("\r\n", "\n") for t in EDGE_TOKENS]  # SSE can't carry CR in data
    assert outputs(parse_sse(raw)[0]) == expected
    assert emu.predictions[pred["id"]].output == EDGE_TOKENS


async def test_huge_token(emu: Emulator, session: aiohttp.ClientSession) -> None:
    big = "ü" * 150_000  # 300 KB of UTF-8 in one data line
    emu.inject(Faults(tokens=["start", big, "end"]))
    pred = await create(session, emu)
    assert outputs(await stream_all(session, pred["urls"]["stream"])) == ["start", big, "end"]


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("split", [False, True])
async def test_wire_variants_give_same_events(line_ending: str, split: bool,
                                              session: aiohttp.ClientSession) -> None:
    tokens = ["Hi", " there", "a\nb", "é😀—", "\n", " end"]
    with Emulator(token=TOKEN, line_ending=line_ending, split_writes=split) as emu:
        emu.inject(Faults(tokens=tokens))
        pred = await create(session, emu)
        raw, clean, chunks = await read_stream(session, pred["urls"]["stream"])
    assert clean
    events = parse_sse(raw)[0]
    assert outputs(events) == tokens and events[-1].event == "done"
    assert f"event: done{line_ending}".encode() in raw
    other_endings = {"\n", "\r\n", "\r"} - {line_ending} - ({"\n", "\r"} if line_ending == "\r\n" else set())
    assert not any(e.encode() in raw for e in other_endings)
    if split:
        assert chunks > 20  # the client really met events (and characters) in pieces


async def test_cancel_ends_stream(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(stall_after=3))
    pred = await create(session, emu)
    headers = {**AUTH, "Accept": "text/event-stream"}
    async with session.get(pred["urls"]["stream"], headers=headers) as r:
        raw = b""
        while len(outputs(parse_sse(raw)[0])) < 3:
            raw += await r.content.readany()
        # Stalled: nothing more arrives while the prediction is still running.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.content.readany(), 0.2)
        assert emu.predictions[pred["id"]].status == "processing"
        async with session.post(pred["urls"]["cancel"], headers=AUTH) as c:
            assert c.status == 200
            canceled = await c.json()
        raw += await r.content.read()
    assert canceled["status"] == "canceled" and canceled["metrics"]["output_token_count"] == 3
    events = parse_sse(raw)[0]
    assert events[-1].event == "done" and json.loads(events[-1].data) == {"reason": "canceled"}
    assert emu.cancels == [pred["id"]] and emu.wait_for_cancel(timeout=1) == pred["id"]
    with pytest.raises(TimeoutError):
        emu.wait_for_cancel(timeout=0.05)
    server_side = emu.predictions[pred["id"]]
    assert server_side.status == "canceled" and len(server_side.output) == 3
    _, _, body = await get_json(session, pred["urls"]["get"])
    assert body["status"] == "canceled" and body["completed_at"]


async def test_closing_stream_does_not_stop_generation(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, tokens_per_second=400) as emu:
        emu.inject(Faults(tokens=[f" t{i}" for i in range(30)]))
        pred = await create(session, emu)
        async with session.get(pred["urls"]["stream"], headers=AUTH) as r:
            await r.content.readany()
        final = await wait_status(session, pred)
    assert final["status"] == "succeeded" and len(final["output"]) == 30 and not emu.cancels


async def test_drop_and_resume_with_last_event_id(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(drop_after=3))
    pred = await create(session, emu)
    url = pred["urls"]["stream"]
    raw, clean, _ = await read_stream(session, url)
    first = parse_sse(raw)[0]
    assert not clean and len(outputs(first)) == 3 and first[-1].event == "output"
    raw, clean, _ = await read_stream(session, url, last_event_id=first[-1].id)
    rest = parse_sse(raw)[0]
    assert clean and rest[-1].event == "done"
    assert int(rest[0].id.split(":")[1]) == int(first[-1].id.split(":")[1]) + 1
    server_side = emu.predictions[pred["id"]]
    assert outputs(first) + outputs(rest) == server_side.output
    assert server_side.connections == 2


async def test_drop_every_connection(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(drop_after=4, drop_every_connection=True))
    pred = await create(session, emu)
    final = await wait_status(session, pred)
    got: list[str] = []
    last_id = None
    for _ in range(40):
        raw, clean, _ = await read_stream(session, pred["urls"]["stream"], last_id)
        events = parse_sse(raw)[0]
        assert not clean and len(outputs(events)) <= 4
        assert all(e.event != "done" for e in events)
        got += outputs(events)
        last_id = events[-1].id if events else last_id
    assert got == final["output"]  # everything arrives, but `done` never does


async def test_drop_clean_ends_body_without_done(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(drop_after=2, drop_clean=True))
    pred = await create(session, emu)
    raw, clean, _ = await read_stream(session, pred["urls"]["stream"])
    events = parse_sse(raw)[0]
    assert clean and len(outputs(events)) == 2 and events[-1].event == "output"


async def test_error_after(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(error_after=2))
    pred = await create(session, emu)
    events = await stream_all(session, pred["urls"]["stream"])
    assert len(outputs(events)) == 2
    assert [e.event for e in events[-2:]] == ["error", "done"]
    assert json.loads(events[-2].data) == {"detail": "CUDA out of memory (emulated)"}
    assert json.loads(events[-1].data) == {"reason": "error"}
    _, _, body = await get_json(session, pred["urls"]["get"])
    assert body["status"] == "failed" and body["error"] == "CUDA out of memory (emulated)"
    assert list(body) == FINISHED_KEYS
    assert "RuntimeError" in body["logs"] and body["metrics"]["output_token_count"] == 2


async def test_rate_limit(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(rate_limit=2))
    url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    for _ in range(2):
        async with session.post(url, json={"input": {"prompt": "x"}}, headers=AUTH) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "1"
            assert r.headers["Content-Type"].startswith("application/problem+json")
            # As documented: a detail and nothing else.
            assert await r.json(content_type=None) == {
                "detail": "Request was throttled. Expected available in 1 second."}
        assert (await get_json(session, f"{emu.base_url}/v1/account"))[0] == 200  # only creates
    await create(session, emu)
    emu.inject(Faults(rate_limit=1, retry_after=2.5))
    async with session.post(url, json={"input": {"prompt": "x"}}, headers=AUTH) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "3"
        assert (await r.json(content_type=None))["detail"] == "Request was throttled. Expected available in 3 seconds."


def test_billing_required(emu: Emulator) -> None:
    emu.inject(Faults(billing_required=1))
    url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    status, headers, raw = http("POST", url, {"input": {"prompt": "x"}})
    assert_problem(status, headers, raw, 402)
    assert raw == json.dumps({"title": "Billing required", "detail":
                              "You need to set up billing to run this model. Go to "
                              "https://replicate.com/account/billing#billing to set it up. If you have "
                              "recently set up billing, please wait a few minutes before trying again.",
                              "status": 402}).encode()
    assert http("POST", url, {"input": {"prompt": "x"}})[0] == 201


async def test_server_and_html_errors(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(server_error=1, html_error=1))
    url = f"{emu.base_url}/v1/account"
    async with session.get(url, headers=AUTH) as r:
        assert r.status == 502 and r.headers["Content-Type"].startswith("text/html")
        page = await r.text()
        assert page.startswith("<!DOCTYPE html>") and "Bad gateway" in page and "cloudflare" in page
    status, headers, body = await get_json(session, url)
    assert status == 500 and headers["Content-Type"].startswith("application/problem+json")
    assert body["title"] == "Internal Server Error" and body["status"] == 500
    assert (await get_json(session, url))[0] == 200


async def test_no_stream_means_polling(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(no_stream=True))
    pred = await create(session, emu)
    assert "stream" not in pred["urls"]
    final = await wait_status(session, pred)
    assert final["status"] == "succeeded" and final["output"] == emu.predictions[pred["id"]].output
    stream_url = f"{emu.stream_base}/v1/streams/{pred['id']}"
    assert (await get_json(session, stream_url))[0] == 404


async def test_metrics_on_finished_prediction(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, input={"prompt": "Count my tokens please"})
    assert "metrics" not in pred
    final = await wait_status(session, pred)
    metrics = final["metrics"]
    assert set(metrics) == {"predict_time", "total_time", "input_token_count", "output_token_count",
                            "tokens_per_second", "time_to_first_token"}
    assert metrics["input_token_count"] == 4 and metrics["output_token_count"] == len(final["output"])
    assert metrics["total_time"] >= metrics["predict_time"] >= 0
    assert final["started_at"] and final["completed_at"].endswith("Z")
    assert emu.predictions[pred["id"]].metrics == metrics
    _, _, listed = await get_json(session, f"{emu.base_url}/v1/predictions")
    assert [p["id"] for p in listed["results"]] == [pred["id"]] and listed["next"] is None


async def test_pacing_and_cold_start(emu: Emulator, session: aiohttp.ClientSession) -> None:
    # Per-prediction overrides of the emulator's tokens_per_second=0 and cold_start=0.
    emu.inject(Faults(tokens=list("abcdef"), cold_start=0.2, tokens_per_second=25))
    pred = await create(session, emu)
    seen: list[tuple[str, int]] = []
    while not seen or seen[-1][0] != "succeeded":
        _, _, body = await get_json(session, pred["urls"]["get"])
        seen.append((body["status"], len(body["output"] or [])))
        await asyncio.sleep(0.01)
    statuses = [s for s, _ in seen]
    assert statuses[0] == "starting" and "processing" in statuses
    assert statuses.index("processing") > 1  # stayed starting a while
    counts = [n for _, n in seen]
    assert counts == sorted(counts) and counts[-1] == 6
    assert any(0 < n < 6 for s, n in seen if s == "processing")  # tokens really arrive over time
    assert "Booting model" in body["logs"] and "Loading weights" in body["logs"]


async def test_prediction_keys_at_each_stage(emu: Emulator, session: aiohttp.ClientSession) -> None:
    """Only the keys real answers have at each stage: a started_at once started, a completed_at
    and metrics once finished, never a key set to null in advance; a create answers without them."""
    emu.inject(Faults(tokens=["a", "b"], cold_start=0.4, stall_after=1))
    pred = await create(session, emu)
    assert list(pred) == CREATED_KEYS
    _, _, starting = await get_json(session, pred["urls"]["get"])
    assert starting["status"] == "starting" and list(starting) == STARTING_KEYS
    processing = await wait_status(session, pred, ("processing",))
    assert list(processing) == PROCESSING_KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", processing["started_at"])
    async with session.post(pred["urls"]["cancel"], headers=AUTH) as r:
        assert r.status == 200
        canceled = await r.json()
    assert canceled["status"] == "canceled" and list(canceled) == FINISHED_KEYS
    assert {"predict_time", "total_time"} <= set(canceled["metrics"])
    assert (await get_json(session, pred["urls"]["get"]))[2] == canceled
    # Canceled before it ever started: no started_at at all.
    emu.inject(Faults(cold_start=30))
    never = await create(session, emu)
    async with session.post(never["urls"]["cancel"], headers=AUTH) as r:
        assert list(await r.json()) == [*CREATED_KEYS[:-1], "completed_at", "urls", "metrics"]
    # Prefer: wait brings a finished prediction back in the create answer's shape.
    async with session.post(f"{emu.base_url}/v1/models/{LLAMA}/predictions", json={"input": {"prompt": "x"}},
                            headers={**AUTH, "Prefer": "wait=5"}) as r:
        waited = await r.json()
    assert waited["status"] == "succeeded" and waited["output"] and list(waited) == CREATED_KEYS
    _, _, listed = await get_json(session, f"{emu.base_url}/v1/predictions")
    assert all(list(p) == FINISHED_KEYS for p in listed["results"] if p["id"] == waited["id"])


# -- models and account ----------------------------------------------------------------
async def test_model_schema_endpoints(emu: Emulator, session: aiohttp.ClientSession) -> None:
    status, headers, model = await get_json(session, f"{emu.base_url}/v1/models/{LLAMA}")
    assert status == 200 and "ratelimit-remaining" in headers
    assert set(model) == {"url", "owner", "name", "description", "visibility", "github_url", "paper_url",
                          "license_url", "run_count", "cover_image_url", "default_example", "latest_version",
                          "created_at"}  # the keys of models-get in replicate-python's cassettes
    version = model["latest_version"]
    assert list(version) == ["id", "created_at", "cog_version", "openapi_schema"]
    assert re.fullmatch(r"[0-9a-f]{64}", version["id"]) and version["cog_version"]
    schemas = version["openapi_schema"]["components"]["schemas"]
    assert schemas["Output"]["x-cog-array-type"] == "iterator"
    assert schemas["Output"]["x-cog-array-display"] == "concatenate"
    assert schemas["Output"]["items"] == {"type": "string"} and schemas["Output"]["type"] == "array"
    props = schemas["Input"]["properties"]
    assert schemas["Input"]["required"] == ["prompt"]
    assert props["max_tokens"]["default"] == 512 and props["temperature"]["maximum"] == 5
    assert props["system_prompt"]["default"] == "You are a helpful assistant"
    assert all({"type", "title", "description", "x-order"} <= set(p) for p in props.values())
    assert "max_completion_tokens" in (await get_json(
        session, f"{emu.base_url}/v1/models/openai/gpt-4o-mini"))[2]["latest_version"][
            "openapi_schema"]["components"]["schemas"]["Input"]["properties"]
    _, _, got = await get_json(session, f"{emu.base_url}/v1/models/{LLAMA}/versions/{version['id']}")
    assert got == version
    _, _, versions = await get_json(session, f"{emu.base_url}/v1/models/{LLAMA}/versions")
    assert versions["results"] == [version]
    _, _, listed = await get_json(session, f"{emu.base_url}/v1/models")
    assert listed["next"] is None and {f"{m['owner']}/{m['name']}" for m in listed["results"]} == set(MODELS)
    assert (await get_json(session, f"{emu.base_url}/v1/models/{LLAMA}/versions/{'0' * 64}"))[0] == 404


async def test_prefer_wait_and_cancel_after(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    async with session.post(url, json={"input": {"prompt": "x"}},
                            headers={**AUTH, "Prefer": "wait=5", "Cancel-After": "1m30s"}) as r:
        pred = await r.json()
    assert r.status == 201 and pred["status"] == "succeeded" and pred["output"]
    assert pred["deadline"].endswith("Z")
    async with session.post(url, json={"input": {"prompt": "x"}},
                            headers={**AUTH, "Cancel-After": "2s"}) as r:
        assert r.status == 422


# -- the deterministic model ---------------------------------------------------------
def test_responder_is_deterministic_and_shaped() -> None:
    text = respond(LLAMA, {"prompt": "Tell me about rivers"}, LLAMA_PROPS)
    assert text == respond(LLAMA, {"prompt": "Tell me about rivers"}, LLAMA_PROPS)
    tokens = tokenize(text)
    assert 80 <= len(tokens) <= 150 and "".join(tokens) == text
    assert "\n\n" in text and "—" in text and LLAMA in text and "“Tell me about rivers”" in text
    assert " world" in tokenize("hello world\n")  and tokenize("a\n\nb") == ["a", "\n", "\n", "b"]


def test_responder_depends_on_prompt_conversation_and_settings() -> None:
    base = respond(LLAMA, {"prompt": "Hi"}, LLAMA_PROPS)
    assert "turn 1" in base and "System prompt" not in base and "Temperature" not in base
    assert respond(LLAMA, {"prompt": "Hello"}, LLAMA_PROPS) != base
    assert respond("meta/meta-llama-3-8b-instruct", {"prompt": "Hi"}, LLAMA_PROPS) != base
    changed = respond(LLAMA, {"prompt": "Hi", "top_p": 0.5}, LLAMA_PROPS)
    assert changed != base and changed.split("\n\n")[0] == base.split("\n\n")[0]
    assert "Temperature: 0.2." in respond(LLAMA, {"prompt": "Hi", "temperature": 0.2}, LLAMA_PROPS)
    g4f = "System: Be brief.\nUser: first\nAssistant: ok\nUser: second\nline two\nAssistant:"
    text = respond(LLAMA, {"prompt": g4f}, LLAMA_PROPS)
    assert "turn 2" in text and "“second line two”" in text and "System prompt: “Be brief.”" in text
    text = respond(LLAMA, {"prompt": "Hi", "system_prompt": "Talk like a pirate"}, LLAMA_PROPS)
    assert "System prompt: “Talk like a pirate”" in text
    gpt = MODELS["openai/gpt-4o-mini"]
    messages = [{"role": "system", "content": "Use French"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": [{"type": "text", "text": "third?"}]},
                {"role": "assistant", "content": "c"}, {"role": "user", "content": "last one"}]
    text = respond(gpt.ref, {"messages": messages, "prompt": "ignored"}, gpt.properties)
    assert "turn 3" in text and "“last one”" in text and "“Use French”" in text
    long = respond(LLAMA, {"prompt": "word " * 50}, LLAMA_PROPS)
    assert "…”" in long
    with pytest.raises(ValueError):
        respond(gpt.ref, {}, gpt.properties)


def test_responder_ends_with_a_python_block_when_asked_for_code_or_a_fix() -> None:
    for prompt in ("Write code that adds two numbers.", "Please FIX this cell:\n1/0"):
        text = respond(LLAMA, {"prompt": prompt}, LLAMA_PROPS)
        _, block = text.split("\n\n```python\n")
        assert block.endswith("\n```\n") and "```" not in block[:-5]
        assert compile(block[:-5], "<reply>", "exec")  # it is Python
        assert text == respond(LLAMA, {"prompt": prompt}, LLAMA_PROPS)
    for prompt in ("Tell me about rivers", "A codex and a prefix"):  # whole words only
        assert "```" not in respond(LLAMA, {"prompt": prompt}, LLAMA_PROPS)


def test_responder_max_tokens_and_stop_sequences() -> None:
    assert len(tokenize(respond(LLAMA, {"prompt": "Hi", "max_tokens": 7}, LLAMA_PROPS))) == 7
    mixtral = MODELS["mistralai/mixtral-8x7b-instruct-v0.1"]
    assert len(tokenize(respond(mixtral.ref, {"prompt": "Hi", "max_new_tokens": 5},
                                mixtral.properties))) == 5
    gpt = MODELS["openai/gpt-4o-mini"]
    assert len(tokenize(respond(gpt.ref, {"prompt": "Hi", "max_completion_tokens": 3},
                                gpt.properties))) == 3
    full = respond(LLAMA, {"prompt": "Hi"}, LLAMA_PROPS)
    cut = respond(LLAMA, {"prompt": "Hi", "stop_sequences": "zzz,—,You said"}, LLAMA_PROPS)
    assert full.startswith(cut) and cut.endswith("turn 1. ")
    # Mixtral has no stop_sequences input: an unknown key changes nothing but the seed.
    assert "\n\n" in respond(mixtral.ref, {"prompt": "Hi", "stop_sequences": "\n"}, mixtral.properties)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.sampled_from(["\n", "\r\n", "\r"]))
def test_tokenize_and_wire_round_trip(text: str, line_ending: str) -> None:
    assert "".join(tokenize(text)) == text
    assert all(t == "\n" or "\n" not in t for t in tokenize(text))
    raw = encode_event("1:0", "output", text, line_ending)
    assert b"".join(split_pieces(raw, 4)) == raw
    (event,) = parse_sse(raw)[0]
    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")


async def test_server_applies_max_tokens(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, input={"prompt": "Hi", "max_tokens": 4, "stop_sequences": "zz"})
    final = await wait_status(session, pred)
    assert len(final["output"]) == 4
    assert "".join(final["output"]) == respond(LLAMA, pred["input"], LLAMA_PROPS)


# -- Replicate's official Python client, unchanged ----------------------------------------
def test_official_client_stream(emu: Emulator, client: replicate.Client) -> None:
    events = list(client.stream(LLAMA, input={"prompt": "What is SSE?", "temperature": 0.3}))
    text = "".join(str(e) for e in events)
    (pred,) = emu.predictions.values()
    assert text == "".join(pred.output) and "Temperature: 0.3." in text
    assert events[-1].event.value == "done"
    assert any(e.event.value == "logs" for e in events)
    emu.inject(Faults(tokens=["a\nb", "\n", "é😀", " end"]))
    text = "".join(str(e) for e in client.stream(LLAMA, input={"prompt": "x"}))
    assert text == "a\nb\né😀 end"


def test_official_client_create_cancel_and_models(emu: Emulator, client: replicate.Client) -> None:
    emu.inject(Faults(stall_after=1))
    prediction = client.predictions.create(model=LLAMA, input={"prompt": "Hi"}, stream=True)
    assert prediction.status == "starting" and prediction.urls["stream"].startswith(emu.stream_base)
    prediction.cancel()
    assert prediction.status == "canceled"
    assert emu.wait_for_cancel() == prediction.id
    version = MODELS[LLAMA].version_id
    pinned = client.predictions.create(version=version, input={"prompt": "Hi"})
    client.poll_interval = 0.01
    pinned.wait()
    assert pinned.status == "succeeded" and pinned.version == version
    model = client.models.get(LLAMA)
    assert model.latest_version is not None and model.latest_version.id == version
    assert "prompt" in model.latest_version.openapi_schema["components"]["schemas"]["Input"]["properties"]
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="anthropic/claude-3.7-sonnet",
                                  input={"prompt": "x", "max_tokens": 1})
    assert info.value.status == 422 and "input.max_tokens" in (info.value.detail or "")


def test_official_client_stream_error_raises(emu: Emulator, client: replicate.Client) -> None:
    emu.inject(Faults(error_after=1))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        list(client.stream(LLAMA, input={"prompt": "x"}))


# -- lifecycle and CLI --------------------------------------------------------------------
async def test_close_with_open_streams_and_running_generations(session: aiohttp.ClientSession) -> None:
    emu = Emulator(token=TOKEN, tokens_per_second=50).start()
    try:
        emu.inject(Faults(stall_after=1))
        stalled = await create(session, emu)
        running = await create(session, emu)
        responses = [await session.get(p["urls"]["stream"], headers=AUTH) for p in (stalled, running)]
        await responses[0].content.readany()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, emu.close)
    for response in responses:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        response.release()
    emu.close()  # idempotent


def test_port_in_use_raises_on_start(emu: Emulator) -> None:
    port = int(emu.base_url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        Emulator(port=port).start()


def test_cli_help_and_run() -> None:
    env = {"PYTHONPATH": str(ROOT)}
    helped = subprocess.run([sys.executable, "-m", "replicate_magic.emulator", "--help"],
                            capture_output=True, text=True, timeout=30, env=env)
    assert helped.returncode == 0
    assert "REPLICATE_BASE_URL" in helped.stdout and "--tokens-per-second" in helped.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicate_magic.emulator", "--port", "0", "--stream-port", "0",
         "--token", "cli-token"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        base = next(line.split("=", 1)[1].strip() for line in lines if line.startswith("REPLICATE_BASE_URL="))
        assert "REPLICATE_API_TOKEN=cli-token\n" in lines
        status, _, _ = http("GET", f"{base}/v1/account", headers={"Authorization": "Bearer cli-token"})
        assert status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err


async def test_injected_log_lines_come_before_the_first_token(emu: Emulator,
                                                              session: aiohttp.ClientSession) -> None:
    lines = ["<img src=x onerror=alert(1)>", "two\nlines", "é😀 done"]
    emu.inject(Faults(logs=lines, tokens=["a", "b"], cold_start=0.4))
    pred = await create(session, emu)
    await asyncio.sleep(0.3)  # half-way through the cold start: the lines are out, no token yet
    _, _, body = await get_json(session, pred["urls"]["get"])
    assert body["status"] == "starting" and body["output"] is None
    assert body["logs"].endswith("".join(line + "\n" for line in lines))
    events = await stream_all(session, pred["urls"]["stream"])
    names = [e.event for e in events]
    first_output = names.index("output")
    logged = [e.data for e in events[:first_output] if e.event == "logs"]
    assert logged[-3:] == lines and "Booting" in logged[0]  # after the boot lines, multi-line kept
    assert "logs" not in names[first_output:] and outputs(events) == ["a", "b"]
    # The next prediction has only its own boot lines again.
    again = await create(session, emu)
    body = await wait_status(session, again)
    assert body["status"] == "succeeded" and not any(line in body["logs"] for line in lines)


# -- hardening: Host check, size limits, bounded memory, Cancel-After, CLI values -------------
def with_host(url: str, host: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request whose Host header says `host` while the connection goes to `url`'s address."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, parts.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in {**AUTH, **(headers or {})}.items():
            conn.putheader(name, value.encode())  # UTF-8, where http.client would insist on Latin-1
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def foreign_hosts(port: int) -> list[str]:
    return [
        f"evil.example:{port}",             # a DNS-rebinding page on our port
        f"rebind.127.0.0.1.nip.io:{port}",  # a name that really resolves to 127.0.0.1
        f"localhost.evil.example:{port}",
        "evil.example",                     # its page on port 80
        "127.0.0.1", "localhost",           # no port means port 80, not ours
        f"127.0.0.1:{port + 1}", f"localhost:{port + 1}",
        f"[::1]:{port}",                    # this connection reached 127.0.0.1, not ::1
        f"10.0.0.8:{port}", f"127.0.0.1:{port}:{port}", f"127.0.0.1:{port}x", "",
    ]


def test_foreign_host_is_refused_before_anything_happens(emu: Emulator) -> None:
    create_url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    body = json.dumps({"input": {"prompt": "a secret prompt"}}).encode()
    port = port_of(emu.base_url)
    for host in foreign_hosts(port):
        problem = assert_problem(*with_host(create_url, host, "POST", body), 403)
        assert problem["title"] == "Forbidden" and f"Host: 127.0.0.1:{port}" in problem["detail"]
        assert_problem(*with_host(f"{emu.base_url}/v1/predictions", host), 403)
    assert emu.requests == [] and not emu.predictions  # not recorded, nothing created
    # The names of the address it listens on are served, whatever their case.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        assert with_host(create_url, host, "POST", body)[0] == 201
    assert len(emu.predictions) == 3 and len(emu.requests) == 3
    status, _, _ = http("GET", emu.base_url.replace("127.0.0.1", "localhost") + "/v1/account")
    assert status == 200


def test_foreign_host_is_refused_by_the_stream_server(emu: Emulator) -> None:
    status, _, raw = http("POST", f"{emu.base_url}/v1/models/{LLAMA}/predictions", {"input": {"prompt": "x"}})
    pred = json.loads(raw)
    recorded = len(emu.requests)
    port = port_of(emu.stream_base)
    for host in [*foreign_hosts(port), f"127.0.0.1:{port_of(emu.base_url)}"]:  # the API's port too
        assert_problem(*with_host(pred["urls"]["stream"], host), 403)
    assert len(emu.requests) == recorded and emu.predictions[pred["id"]].connections == 0
    status, headers, raw = with_host(pred["urls"]["stream"], f"localhost:{port}")
    assert status == 200 and headers["Content-Type"] == "text/event-stream" and b"event: done" in raw


def test_request_without_host_is_refused(emu: Emulator) -> None:
    # HTTP/1.0 may omit Host (aiohttp itself answers 400 to an HTTP/1.1 request without one).
    with socket.create_connection(("127.0.0.1", port_of(emu.base_url)), timeout=5) as sock:
        sock.sendall(f"GET /v1/account HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith((b"HTTP/1.0 403", b"HTTP/1.1 403"))
    assert emu.requests == []


def test_wildcard_bind_answers_ip_literals_and_localhost_only() -> None:
    with Emulator(token=TOKEN, host="0.0.0.0") as emu:
        url, port = f"{emu.base_url}/v1/account", port_of(emu.base_url)
        # e.g. through a container's port mapping, the Host names an address of another interface
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"192.0.2.7:{port}", f"[::1]:{port}"):
            assert with_host(url, host)[0] == 200, host
        for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
            assert with_host(url, host)[0] == 403, host


def test_ipv6_loopback_bind() -> None:
    try:
        emu = Emulator(token=TOKEN, host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with emu:
        assert emu.base_url.startswith("http://[::1]:")
        url, port = f"{emu.base_url}/v1/account", port_of(emu.base_url)
        assert http("GET", url)[0] == 200
        assert with_host(url, f"localhost:{port}")[0] == 200
        assert with_host(url, f"[0:0:0:0:0:0:0:1]:{port}")[0] == 200  # the same address
        for host in (f"127.0.0.1:{port}", f"evil.example:{port}", f"[::2]:{port}"):
            assert with_host(url, host)[0] == 403, host


@pytest.mark.parametrize(("header", "local", "bind", "allowed"), [
    ("127.0.0.1:8700", ("127.0.0.1", 8700), "127.0.0.1", True),
    ("localhost:8700", ("127.0.0.1", 8700), "127.0.0.1", True),
    ("localhost:8700", ("::ffff:127.0.0.1", 8700), "::", True),  # dual-stack socket, IPv4 client
    ("127.0.0.1:8700", ("::ffff:127.0.0.1", 8700), "::", True),
    ("localhost:80", ("127.0.0.1", 80), "127.0.0.1", True),
    ("localhost", ("127.0.0.1", 80), "127.0.0.1", True),           # port 80 is the default
    ("localhost", ("127.0.0.1", 8700), "127.0.0.1", False),
    ("localhost:8700", ("192.168.1.5", 8700), "192.168.1.5", False),  # not a loopback address
    ("192.168.1.5:8700", ("192.168.1.5", 8700), "192.168.1.5", True),
    ("devbox.lan:8700", ("192.168.1.5", 8700), "devbox.lan", True),   # the name it was told to use
    ("DEVBOX.LAN:8700", ("192.168.1.5", 8700), "devbox.lan", True),
    ("other.lan:8700", ("192.168.1.5", 8700), "devbox.lan", False),
    ("evil.example:8700", ("192.168.1.5", 8700), "0.0.0.0", False),
    ("127.0.0.1:99999", ("127.0.0.1", 8700), "127.0.0.1", False),
    ("[evil.example]:8700", ("127.0.0.1", 8700), "0.0.0.0", False),
    ("[127.0.0.1]:8700", ("127.0.0.1", 8700), "127.0.0.1", False),   # brackets hold IPv6 only
    ("127.000.000.001:8700", ("127.0.0.1", 8700), "127.0.0.1", False),
    (None, ("127.0.0.1", 8700), "127.0.0.1", False),
])
def test_host_rules(header: str | None, local: tuple[str, int], bind: str, allowed: bool) -> None:
    assert host_allowed(header, local, bind) is allowed


async def test_recorded_requests_are_bounded(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN) as emu:  # the default bound: 1,000
        for n in range(1200):
            async with session.get(f"{emu.base_url}/v1/account?n={n}", headers=AUTH) as r:
                assert r.status == 200
        assert len(emu.requests) == 1000 and emu.requests.dropped == 200
        assert [r.path for r in (emu.requests[0], emu.requests[-1])] == [
            "/v1/account?n=200", "/v1/account?n=1199"]  # the newest are kept
    with Emulator(token=TOKEN, max_requests=3) as emu:
        for n in range(5):
            assert http("GET", f"{emu.base_url}/v1/account?n={n}")[0] == 200
        assert [r.path for r in emu.requests] == [f"/v1/account?n={n}" for n in (2, 3, 4)]


async def test_kept_predictions_are_bounded(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, max_predictions=3) as emu:
        made = []
        for n in range(5):  # each finished before the next, so the oldest finished one is the oldest
            made.append(await wait_status(session, await create(session, emu, input={"prompt": f"n{n}"})))
        assert list(emu.predictions) == [p["id"] for p in made[2:]]  # the newest, in order
        assert (await get_json(session, made[0]["urls"]["get"]))[0] == 404
        _, _, listed = await get_json(session, f"{emu.base_url}/v1/predictions")
        assert len(listed["results"]) == 3


async def test_running_predictions_are_kept_before_finished_ones(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, max_predictions=2) as emu:
        emu.inject(Faults(stall_after=1))
        running = await create(session, emu)
        finished = await wait_status(session, await create(session, emu))
        newest = await create(session, emu)
        assert list(emu.predictions) == [running["id"], newest["id"]]  # the finished one went first
        assert finished["id"] not in emu.predictions
    with Emulator(token=TOKEN, max_predictions=1) as emu:
        emu.inject(Faults(stall_after=1))
        first = await create(session, emu)
        server_side = emu.predictions[first["id"]]
        await create(session, emu)
        # Every kept one was running: the oldest goes, and is stopped (no hidden generation).
        assert first["id"] not in emu.predictions and server_side.closed
        task = server_side.task
        assert task is not None
        for _ in range(200):  # the cancellation runs on the emulator's loop
            if task.done():
                break
            await asyncio.sleep(0.01)
        assert task.cancelled() and server_side.status != "succeeded"


def test_prediction_store_bounds_kept_input_bytes() -> None:
    store = PredictionStore(max_count=10, max_input_bytes=100)
    preds = [Prediction(id=f"p{n}", model=LLAMA, version="hidden", input={}, input_bytes=40,
                        status="succeeded") for n in range(4)]
    for pred in preds:
        store.add(pred)
    assert list(store) == ["p2", "p3"]  # 80 bytes kept; a third would pass 100
    big = Prediction(id="big", model=LLAMA, version="hidden", input={}, input_bytes=500)
    store.add(big)
    assert list(store) == ["big"]  # the newest stays even alone over the budget


async def test_recorded_body_is_capped(session: aiohttp.ClientSession) -> None:
    prompt = "p" * 200_000
    with Emulator(token=TOKEN) as emu:
        pred = await create(session, emu, input={"prompt": prompt})
        (recorded,) = emu.requests
        assert len(recorded.body) == 64 * 1024 and recorded.body_length > 200_000
        assert recorded.truncated and recorded.json is None
        assert emu.predictions[pred["id"]].input == {"prompt": prompt}  # the model got it all
        await create(session, emu, input={"prompt": "small"})
        assert emu.requests[-1].json == {"input": {"prompt": "small"}}
    with Emulator(token=TOKEN, max_recorded_body=10) as emu:
        await create(session, emu)
        assert emu.requests[0].body == b'{"input": '


async def test_oversized_body_is_refused_with_413(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    huge = b'{"input": {"prompt": "' + b"x" * (20 * 1024 * 1024) + b'"}}'

    async def chunked() -> Any:  # no Content-Length: the limit is found while reading
        for start in range(0, len(huge), 1024 * 1024):
            yield huge[start:start + 1024 * 1024]

    for data in (io.BytesIO(huge), chunked()):  # with Content-Length, then without
        async with session.post(url, data=data, headers={**AUTH, "Content-Type": "application/json"}) as r:
            assert r.status == 413 and r.headers["Content-Type"].startswith("application/problem+json")
            problem = await r.json(content_type=None)
        assert problem["status"] == 413 and "10 MiB" in problem["detail"]
    assert not emu.predictions
    declared, streamed = emu.requests
    assert declared.body == b"" and declared.body_length == len(huge)
    assert streamed.body == b"" and streamed.body_length == 0 and streamed.json is None
    # Just under the limit is still served.
    almost = json.dumps({"input": {"prompt": "y" * (9 * 1024 * 1024)}}).encode()
    async with session.post(url, data=io.BytesIO(almost), headers={**AUTH, "Content-Type": "application/json"}) as r:
        assert r.status == 201
    assert emu.requests[-1].body_length > 9 * 1024 * 1024 and len(emu.requests[-1].body) == 64 * 1024


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-5", "1e3", "1_0", "+5", "garbage", "",
                                   "4s", "0", "500ms", "30 s", "\u0665\u0665", "9" * 400, "8761h", "1h30"])
def test_invalid_cancel_after_creates_nothing(emu: Emulator, value: str) -> None:
    url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
    body = assert_problem(*with_host(url, f"127.0.0.1:{port_of(emu.base_url)}", "POST",
                                     json.dumps({"input": {"prompt": "x"}}).encode(),
                                     {"Cancel-After": value}), 422)
    assert body["title"] == "Invalid Cancel-After header"
    assert not emu.predictions


@pytest.mark.parametrize(("value", "seconds"), [("5", 5), ("30s", 30), (" 1h30m ", 5400), ("1.5m", 90),
                                                ("8760h", 31_536_000)])
def test_valid_cancel_after_sets_the_deadline(emu: Emulator, value: str, seconds: float) -> None:
    status, _, raw = http("POST", f"{emu.base_url}/v1/models/{LLAMA}/predictions", {"input": {"prompt": "x"}},
                          {**AUTH, "Cancel-After": value})
    assert status == 201
    pred = emu.predictions[json.loads(raw)["id"]]
    assert pred.deadline_ns is not None
    assert abs((pred.deadline_ns - pred.created_ns) / 1e9 - seconds) < 1e-3
    assert parse_cancel_after(value) == seconds


@pytest.mark.parametrize("args", [["--port", "99999"], ["--stream-port", "http"], ["--token", ""],
                                  ["--token", "two words"], ["--tokens-per-second", "-5"],
                                  ["--tokens-per-second", "nan"], ["--cold-start", "-1"]])
def test_cli_rejects_bad_values_in_one_line(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "replicate_magic.emulator", *args],
                          check=False, capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("python -m replicate_magic.emulator: error: argument " + args[0])


@pytest.mark.parametrize(("args", "allowed"), [
    (["--port", "99999"], "argument --port: 99999 is not a port (0-65535, 0 = any free port)"),
    (["--token", ""], "argument --token: a token must be non-empty, without spaces or control characters"),
    (["--tokens-per-second", "-5"], "argument --tokens-per-second: must be a number of 0 or more, not '-5'"),
])
def test_cli_says_what_is_allowed(args: list[str], allowed: str) -> None:
    done = subprocess.run([sys.executable, "-m", "replicate_magic.emulator", *args],
                          check=False, capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(ROOT)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"python -m replicate_magic.emulator: error: {allowed} (see --help)\n"
