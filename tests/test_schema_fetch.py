"""Inputs follow the model's schema, or nothing is sent: no silent guessing (DESIGN.md, decision 6).

Against the emulator (and a hostile server) on 127.0.0.1, through ``Replicate``,
``ChatSession.ask``, ``PredictionStream`` and the magic. Schemas are cached per model for a
while; a schema fetched before is used when a later fetch fails; with none known, the turn
fails in one line before any prediction is created. Keys are guessed only where no schema
can exist (a bare version id, a model without an Input), and the note under the reply says so.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest
from aiohttp import web

from replicate_magic import Replicate, ResponseError
from replicate_magic.chat import ChatSession, TurnRequest
from replicate_magic.client import ReplicateClient
from replicate_magic.conversation import ConversationStore
from replicate_magic.emulator import Faults
from replicate_magic.inputs import Settings
from replicate_magic.schemas import SchemaCache, SchemaUnavailableError, default_schemas
from replicate_magic.settings import Timeouts
from replicate_magic.streaming import PredictionStream

from .conftest import TOKEN
from .hostile import Hostile

LLAMA = "meta/meta-llama-3-70b-instruct"
HI = [{"role": "user", "content": "Hi"}]


async def collect(**kwargs) -> str:
    kwargs.setdefault("model", LLAMA)
    kwargs.setdefault("messages", HI)
    return "".join([t async for t in Replicate.create_async_generator(**kwargs)])


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")]


def schema_gets(emu, model: str = LLAMA) -> list:
    return [r for r in emu.requests if r.method == "GET" and r.path == f"/v1/models/{model}"]


def ask(request: TurnRequest):
    return ChatSession(ConversationStore()).ask(request, on_token=lambda token: None)


def version_of(emu, model: str) -> str:
    request = urllib.request.Request(f"{emu.base_url}/v1/models/{model}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["latest_version"]["id"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- nothing known, nothing fetched: one line, nothing sent ---------------------------------------


@pytest.mark.parametrize(("fault", "status", "why"), [
    (Faults(server_error=4), 500, r"Replicate answered HTTP 500 Internal Server Error: An unexpected error "
                                  r"occurred \(emulated\)\. Please try again later\)"),
    (Faults(html_error=4), 502, r"Replicate answered HTTP 502: the server answered with an HTML error page\)"),
])
async def test_no_schema_and_a_failing_fetch_send_nothing(env_emu, fault, status, why):
    env_emu.inject(fault)  # every try of the schema GET (one and three retries) fails
    with pytest.raises(SchemaUnavailableError) as caught:
        await collect(max_tokens=5)
    message = str(caught.value)
    assert caught.value._render_traceback_() == [f"SchemaUnavailableError: {message}"]
    assert message.startswith(f"Could not read the input schema of {LLAMA} (") and "\n" not in message
    assert re.search(why, message) and message.endswith("); nothing was sent. Next: try again in a moment.")
    assert isinstance(caught.value, ResponseError) and caught.value.status == status
    assert len(schema_gets(env_emu)) == 4
    assert creates(env_emu) == [] and len(env_emu.predictions) == 0


async def test_the_failed_fetch_is_not_remembered(env_emu):
    env_emu.inject(Faults(server_error=4))
    with pytest.raises(SchemaUnavailableError):
        await collect()
    assert await collect(max_tokens=5)  # asked again, and now answered
    assert creates(env_emu)[0].json["input"]["max_tokens"] == 5 and len(schema_gets(env_emu)) == 5


async def test_an_unreachable_api_names_the_schema_and_keeps_the_network_advice():
    with pytest.raises(SchemaUnavailableError) as caught:
        await collect(base_url="http://127.0.0.1:9", api_key=TOKEN)
    message = str(caught.value)
    assert message.startswith(f"Could not read the input schema of {LLAMA} (Could not reach http://127.0.0.1:9 (")
    assert message.endswith("; nothing was sent. Next: check the network, the proxy settings and REPLICATE_BASE_URL.")


async def test_a_chat_turn_fails_the_same_way_and_the_conversation_is_untouched(env_emu, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", env_emu.base_url)
    conversations = ConversationStore()
    env_emu.inject(Faults(server_error=4))
    with pytest.raises(SchemaUnavailableError, match="nothing was sent"):
        await ChatSession(conversations).ask(TurnRequest("Hi"), on_token=lambda token: None)
    assert conversations.get("default").context(None) == [] and len(env_emu.predictions) == 0


async def test_an_unknown_model_is_still_a_404_naming_it(env_emu):
    with pytest.raises(ResponseError, match=r"^Replicate has no model nobody/nothing at .*: HTTP 404\.") as caught:
        await collect(model="nobody/nothing")
    assert caught.value.status == 404 and not isinstance(caught.value, SchemaUnavailableError)
    assert creates(env_emu) == []


# -- a schema fetched before: used while fresh, refetched when old, kept when the refetch fails ----


async def test_an_expired_schema_is_used_when_the_refetch_fails(env_emu, monkeypatch):
    monkeypatch.setattr(default_schemas, "ttl", 0.0)  # every turn finds its entry expired
    await collect(max_tokens=5)
    env_emu.inject(Faults(server_error=4))  # the refetch fails on every try
    assert await collect(max_tokens=5)
    first, second = (r.json["input"] for r in creates(env_emu))
    assert first["max_tokens"] == second["max_tokens"] == 5 and "max_new_tokens" not in second
    assert len(schema_gets(env_emu)) == 5 and len(env_emu.predictions) == 2


async def test_an_expired_schema_is_used_when_the_refetch_is_an_html_page(env_emu, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", env_emu.base_url)
    monkeypatch.setattr(default_schemas, "ttl", 0.0)
    await ask(TurnRequest("Hi", model=LLAMA, settings=Settings(max_tokens=5), use_history=False))
    env_emu.inject(Faults(html_error=4))
    result = await ask(TurnRequest("Hi", model=LLAMA, settings=Settings(max_tokens=5), use_history=False))
    assert result.text and result.adjusted == []  # the model's own keys: nothing guessed
    assert creates(env_emu)[-1].json["input"]["max_tokens"] == 5


async def test_a_timed_out_refetch_uses_the_schema_fetched_before():
    clock = Clock()
    schema = {"latest_version": {"openapi_schema": {"components": {"schemas": {
        "Input": {"properties": {"prompt": {"type": "string"}, "max_tokens": {"type": "integer"}}}}}}}}

    async def slow_second_time(server: Hostile, request: web.Request) -> web.StreamResponse:
        if len(server.seen("/v1/models/someone/model")) > 1:
            await asyncio.sleep(2)  # past the client's 0.3 s for an answer
        return web.json_response(schema)

    cache = SchemaCache(ttl=60, clock=clock)
    with Hostile(schema=slow_second_time) as server:
        for _ in range(2):
            client = await ReplicateClient.connect(TOKEN, base_url=server.url, schemas=cache,
                                                   timeouts=Timeouts(request=0.3))
            stream = PredictionStream(client, "someone/model", HI, Settings(max_tokens=5))
            assert "".join([t async for t in stream.tokens()]) == "Hi"
            assert stream.adjusted == [] and stream.schema is not None and stream.schema.output == "other"
            clock.now += 61
    schema_requests = [r for r in server.requests if r.path == "/v1/models/someone/model"]
    assert len(schema_requests) == 5  # one, then four tries that timed out


async def test_a_fresh_schema_is_not_fetched_again_and_an_old_one_is(env_emu):
    clock = Clock()
    cache = SchemaCache(ttl=3600, clock=clock)

    async def one_turn() -> PredictionStream:
        client = await ReplicateClient.connect(TOKEN, base_url=env_emu.base_url, schemas=cache)
        stream = PredictionStream(client, LLAMA, HI, Settings(max_tokens=5))
        assert "".join([t async for t in stream.tokens()])
        return stream

    await one_turn()
    clock.now += 3599
    await one_turn()
    assert len(schema_gets(env_emu)) == 1
    clock.now += 1
    stream = await one_turn()
    assert len(schema_gets(env_emu)) == 2 and stream.schema is not None and stream.schema.output == "text"
    assert len(default_schemas) == 0  # an injected cache is the only one used


# -- keys are guessed only where no schema can exist, and the note says so ---------------------------


async def test_a_bare_version_id_guesses_keys_and_says_so(env_emu, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", env_emu.base_url)
    version = version_of(env_emu, LLAMA)
    result = await ask(TurnRequest("Hi", model=version, settings=Settings(max_tokens=5), use_history=False))
    (create,) = creates(env_emu)
    assert create.json["version"] == version and create.json["input"]["max_new_tokens"] == 5
    assert result.adjusted == ["no schema for a bare version id: input keys guessed (prompt, max_new_tokens)"]
    api_gets = [r.path for r in env_emu.requests if r.method == "GET" and r.server == "api"]
    assert api_gets == [f"/v1/models/{LLAMA}"]  # version_of's own: the turn asked for no schema


async def test_a_model_without_an_input_schema_guesses_keys_and_says_so():
    with Hostile() as server:  # its model answers {"latest_version": null}
        client = await ReplicateClient.connect(TOKEN, base_url=server.url, schemas=SchemaCache())
        stream = PredictionStream(client, "someone/model", HI, Settings(max_tokens=5, temperature=0.2))
        assert "".join([t async for t in stream.tokens()]) == "Hi"
    assert stream.adjusted == [
        "someone/model declares no input schema: input keys guessed (prompt, max_new_tokens, temperature)"]


# -- the magic ----------------------------------------------------------------------------------------


def test_the_magic_fails_in_one_line_and_sends_nothing(ip, env_emu):
    env_emu.inject(Faults(server_error=4))
    with pytest.raises(SchemaUnavailableError, match=f"^Could not read the input schema of {LLAMA} "):
        ip.run_cell_magic("replicate", f"-m {LLAMA} --max-tokens 5", "Hi")
    assert len(env_emu.predictions) == 0


def test_the_magic_shows_the_guess_under_the_reply(ip, env_emu, capsys):
    ip.run_cell_magic("replicate", f"-m {version_of(env_emu, LLAMA)} --max-tokens 5", "Hi")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith("no schema for a bare version id: input keys guessed (prompt, max_new_tokens)")
