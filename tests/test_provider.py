"""The Replicate provider against the emulator over real sockets: every protocol path."""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.request

import pytest

from replicate_magic import MissingAuthError, Replicate, ResponseError, sessions
from replicate_magic.cancels import StopReport
from replicate_magic.emulator import Emulator, Faults
from replicate_magic.errors import (
    InvalidRequestError,
    ModelError,
    RateLimitError,
    StreamError,
)

from .conftest import TOKEN
from .proxy import ForwardProxy

LLAMA = "meta/meta-llama-3-70b-instruct"
HI = [{"role": "user", "content": "Write a haiku about the sea."}]


async def collect(**kwargs) -> str:
    kwargs.setdefault("model", LLAMA)
    kwargs.setdefault("messages", HI)
    return "".join([t async for t in Replicate.create_async_generator(**kwargs)])


def only_prediction(emu):
    (prediction,) = emu.predictions.values()
    return prediction


def creates(emu):
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")]


# -- the class surface ---------------------------------------------------------------------


def test_class_attributes_match_the_seed():
    assert Replicate.url == "https://replicate.com"
    assert Replicate.login_url == "https://replicate.com/account/api-tokens"
    assert Replicate.working is True and Replicate.needs_auth is True
    assert Replicate.default_model == LLAMA and LLAMA in Replicate.models
    assert Replicate.get_model(None) == LLAMA and Replicate.get_model("") == LLAMA
    assert Replicate.get_model("meta-llama/Meta-Llama-3-70B-Instruct") == LLAMA
    assert Replicate.get_model("someone/custom") == "someone/custom"
    params = inspect.signature(Replicate.create_async_generator).parameters
    assert list(params)[:14] == ["model", "messages", "api_key", "proxy", "timeout", "system_prompt", "max_tokens",
                                 "temperature", "top_p", "top_k", "stop", "extra_data", "headers", "kwargs"]
    assert params["timeout"].default == 180 and dict(params["headers"].default) == {"accept": "application/json"}


# -- streaming -------------------------------------------------------------------------------


async def test_async_for_streams_the_whole_reply(env_emu):
    chunks = [t async for t in Replicate.create_async_generator(LLAMA, HI)]
    prediction = only_prediction(env_emu)
    assert len(chunks) == len(prediction.output) > 20
    assert "".join(chunks) == "".join(prediction.output)
    assert "haiku about the sea" in "".join(chunks)
    assert prediction.status == "succeeded"


async def test_the_seeds_own_example_await_then_async_for(env_emu):
    generator = await Replicate.create_async_generator(model=LLAMA, messages=HI, api_key=TOKEN)
    text = "".join([t async for t in generator])
    assert text == "".join(only_prediction(env_emu).output)


EDGE_TOKENS = ["Hello", " world", "\n", "a\nb", "", " two  spaces", "\n\n", "é😀€", "line\r\nbreak", "x" * 300_000, " end"]


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("split_writes", [False, True])
async def test_tokens_survive_the_wire(monkeypatch, line_ending, split_writes):
    tokens = EDGE_TOKENS if not split_writes else [t[:2000] for t in EDGE_TOKENS]
    with Emulator(token=TOKEN, line_ending=line_ending, split_writes=split_writes) as emu:
        emu.inject(Faults(tokens=tokens))
        text = await collect(api_key=TOKEN, base_url=emu.base_url)
    # "line\r\nbreak": SSE has no escaping, so CR LF inside a token arrives as LF.
    assert text == "".join(tokens).replace("\r\n", "\n")


async def test_logs_are_not_part_of_the_text(env_emu):
    env_emu.inject(Faults(cold_start=0.2, tokens=["only", " this"]))
    assert await collect() == "only this"


# -- inputs follow the schema ------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "A haiku?"},
]


async def test_llama_gets_its_own_keys_and_the_system_prompt_once(env_emu):
    text = await collect(messages=CHAT, max_tokens=12, stop="zzz", temperature=0.2, top_k=3.0)
    sent = creates(env_emu)[0].json["input"]
    assert sent["max_tokens"] == 12 and "max_new_tokens" not in sent
    assert sent["system_prompt"] == "Be brief." and "Be brief" not in sent["prompt"]
    assert sent["top_k"] == 3
    assert len(only_prediction(env_emu).output) <= 12 and text


async def test_string_stop_is_one_sequence(env_emu):
    await collect(stop="###")
    assert creates(env_emu)[0].json["input"]["stop_sequences"] == "###"


async def test_mixtral_gets_max_new_tokens_and_system_in_the_prompt(env_emu):
    await collect(model="mistralai/mixtral-8x7b-instruct-v0.1", messages=CHAT, max_tokens=9)
    sent = creates(env_emu)[0].json["input"]
    assert sent["max_new_tokens"] == 9 and "max_tokens" not in sent
    assert sent["prompt"].count("Be brief.") == 1 and "system_prompt" not in sent


async def test_messages_model_gets_messages(env_emu):
    text = await collect(model="openai/gpt-4o-mini", messages=CHAT, max_tokens=50)
    sent = creates(env_emu)[0].json["input"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 50 and "prompt" not in sent
    assert "turn 2" in text.lower()


async def test_schema_is_fetched_once_per_model(env_emu):
    await collect()
    await collect()
    schema_gets = [r for r in env_emu.requests if r.method == "GET" and r.path == f"/v1/models/{LLAMA}"]
    assert len(schema_gets) == 1 and len(creates(env_emu)) == 2


def version_of(emu, model: str) -> str:
    request = urllib.request.Request(f"{emu.base_url}/v1/models/{model}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["latest_version"]["id"]


async def test_version_pinned_model_uses_the_predictions_endpoint(env_emu):
    version = version_of(env_emu, LLAMA)
    text = await collect(model=f"{LLAMA}:{version}", max_tokens=5)
    (create,) = creates(env_emu)
    assert create.path == "/v1/predictions" and create.json["version"] == f"{LLAMA}:{version}"
    assert create.json["input"]["max_tokens"] == 5 and text


async def test_bare_version_id_falls_back_to_the_seed_mapping(env_emu):
    version = version_of(env_emu, LLAMA)
    await collect(model=version, max_tokens=5)
    (create,) = creates(env_emu)
    assert create.json["version"] == version and create.json["input"]["max_new_tokens"] == 5


async def test_extra_data_and_extra_body_are_merged_last(env_emu):
    await collect(temperature=0.1, extra_data={"temperature": 0.7}, extra_body={"seed": 4})
    sent = creates(env_emu)[0].json["input"]
    assert sent["temperature"] == 0.7 and sent["seed"] == 4


# -- the token -----------------------------------------------------------------------------


async def test_token_from_the_gpt4free_variable(emu, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_KEY", TOKEN)
    assert await collect(base_url=emu.base_url)


async def test_no_token_says_where_to_get_one(emu):
    with pytest.raises(MissingAuthError, match="account/api-tokens"):
        await collect(base_url=emu.base_url)
    with pytest.raises(MissingAuthError):
        await collect(base_url=emu.base_url, api_key="  ")
    assert emu.requests == []


async def test_wrong_token_is_missing_auth_and_never_shown(emu):
    wrong = "wrong-token-9c1d77"
    with pytest.raises(MissingAuthError) as caught:
        await collect(base_url=emu.base_url, api_key=wrong)
    assert "401" in str(caught.value) and wrong not in str(caught.value) and wrong not in repr(caught.value)


async def test_token_never_sticks_in_a_default(env_emu):
    defaults = inspect.signature(Replicate.create_async_generator).parameters
    await collect(api_key=TOKEN)
    assert dict(defaults["headers"].default) == {"accept": "application/json"}
    assert TOKEN not in repr(Replicate.__dict__) and dict(defaults["extra_data"].default) == {}


async def test_token_goes_to_the_api_and_its_stream_host_only(env_emu):
    await collect()
    assert {r.server for r in env_emu.requests} == {"api", "stream"}
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in env_emu.requests)


async def test_token_is_withheld_from_a_stream_on_a_foreign_host(emu):
    # Reach the API as "localhost": the stream URLs it hands out name 127.0.0.1, another host.
    api_as_localhost = emu.base_url.replace("127.0.0.1", "localhost")
    with pytest.raises(ResponseError, match="only sent over https to the API and Replicate's own hosts"):
        await collect(base_url=api_as_localhost, api_key=TOKEN)
    stream_requests = [r for r in emu.requests if r.server == "stream"]
    assert stream_requests and all("Authorization" not in r.headers for r in stream_requests)
    assert emu.cancels  # the prediction it could not read is not left running


# -- errors ----------------------------------------------------------------------------------


async def test_unknown_model_is_a_404_in_one_line(env_emu):
    with pytest.raises(ResponseError) as caught:
        await collect(model="nobody/nothing")
    assert caught.value.status == 404 and "\n" not in str(caught.value)
    assert "check the model name" in str(caught.value)
    # Replicate's 404 body names nothing: the message names the model, and the base URL that
    # REPLICATE_BASE_URL points at (a mistyped gateway gives the same 404).
    assert str(caught.value).startswith(f"Replicate has no model nobody/nothing at {env_emu.base_url} "
                                        "(REPLICATE_BASE_URL; is that the API you meant?): HTTP 404.")


async def test_an_unknown_version_names_the_model_and_version(env_emu):
    with pytest.raises(ResponseError, match=f"Replicate has no model {LLAMA}:{'0' * 64} at "):
        await collect(model=f"{LLAMA}:{'0' * 64}")


async def test_a_setting_outside_the_schemas_range_is_refused_before_any_create(env_emu):
    with pytest.raises(InvalidRequestError, match=r"max_tokens=100 is outside what this model takes \(1024 to 64000\)"):
        await collect(model="anthropic/claude-3.7-sonnet", max_tokens=100)
    assert not [r for r in env_emu.requests if r.method == "POST"]


async def test_invalid_input_is_a_422_naming_the_field(env_emu):
    with pytest.raises(ResponseError) as caught:  # a type the schema check leaves to Replicate
        await collect(model="anthropic/claude-3.7-sonnet", extra_data={"max_image_resolution": "large"})
    assert caught.value.status == 422 and "max_image_resolution" in str(caught.value)


async def test_malformed_model_name_is_refused_before_any_request(env_emu):
    with pytest.raises(InvalidRequestError, match="owner/name"):
        await collect(model="llama")
    assert env_emu.requests == []


async def test_429_on_create_is_retried_after_retry_after(env_emu):
    env_emu.inject(Faults(rate_limit=1, retry_after=1))
    assert await collect()
    assert [r.server for r in creates(env_emu)] == ["api", "api"]


async def test_429_that_persists_is_a_rate_limit_error(env_emu):
    env_emu.inject(Faults(rate_limit=10, retry_after=0))
    with pytest.raises(RateLimitError, match="429"):
        await collect()
    assert len(creates(env_emu)) == 4


async def test_5xx_on_create_is_not_retried(env_emu):
    await collect()  # warm the schema cache so the next fault hits the create
    env_emu.inject(Faults(server_error=1))
    with pytest.raises(ResponseError) as caught:
        await collect()
    assert caught.value.status == 500 and len(creates(env_emu)) == 2


async def test_html_error_page_does_not_break_json_parsing(env_emu):
    await collect()
    env_emu.inject(Faults(html_error=1))
    with pytest.raises(ResponseError, match="HTML error page") as caught:
        await collect()
    assert caught.value.status == 502 and "<" not in str(caught.value)


async def test_5xx_on_the_schema_get_is_retried(env_emu):
    env_emu.inject(Faults(server_error=2))
    assert await collect()


async def test_error_event_raises_with_its_detail(env_emu):
    env_emu.inject(Faults(error_after=3))
    seen = []
    with pytest.raises(ModelError, match="emulated") as caught:
        async for token in Replicate.create_async_generator(LLAMA, HI):
            seen.append(token)
    assert len(seen) == 3 and caught.value.prediction_id == only_prediction(env_emu).id
    assert env_emu.cancels == []  # it failed on its own: nothing to cancel


async def test_cancel_from_elsewhere_ends_the_stream_with_an_error(env_emu):
    env_emu.inject(Faults(stall_after=2))
    stream = Replicate.create_async_generator(LLAMA, HI)
    await stream.__anext__()
    await asyncio.to_thread(urllib.request.urlopen, urllib.request.Request(
        f"{env_emu.base_url}/v1/predictions/{only_prediction(env_emu).id}/cancel", method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"}))
    with pytest.raises(ResponseError, match="canceled"):
        async for _ in stream:
            pass


# -- a stream that breaks ------------------------------------------------------------------------


async def test_dropped_stream_resumes_with_last_event_id(env_emu):
    env_emu.inject(Faults(drop_after=5))
    text = await collect()
    prediction = only_prediction(env_emu)
    assert text == "".join(prediction.output)
    resumes = [r for r in env_emu.requests if r.server == "stream" and "Last-Event-ID" in r.headers]
    assert len(resumes) == 1 and prediction.connections == 2


async def test_stream_that_keeps_dropping_falls_back_to_polling(env_emu):
    env_emu.inject(Faults(drop_after=2, drop_every_connection=True))
    text = await collect()
    assert text == "".join(only_prediction(env_emu).output)
    assert any(r.method == "GET" and r.path.startswith("/v1/predictions/") for r in env_emu.requests)


async def test_model_without_a_stream_is_polled(env_emu):
    env_emu.inject(Faults(no_stream=True))
    text = await collect()
    assert text == "".join(only_prediction(env_emu).output)
    assert not [r for r in env_emu.requests if r.server == "stream"]


async def test_stall_hits_the_idle_timeout_and_cancels(env_emu):
    env_emu.inject(Faults(stall_after=3))
    seen = []
    with pytest.raises(StreamError, match=r"No data from the stream for 0.5 s"):
        async for token in Replicate.create_async_generator(LLAMA, HI, timeout=0.5):
            seen.append(token)
    assert len(seen) == 3 and env_emu.cancels == [only_prediction(env_emu).id]


async def test_unreachable_api_is_one_clear_line():
    with pytest.raises(ResponseError, match=r"Could not reach http://127.0.0.1:9") as caught:
        await collect(base_url="http://127.0.0.1:9", api_key=TOKEN)
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)


async def test_slow_start_is_not_a_timeout(env_emu):
    env_emu.inject(Faults(cold_start=0.6, tokens_per_second=50))
    assert await collect(timeout=0.5) == "".join(only_prediction(env_emu).output)


# -- stopping early cancels the prediction -------------------------------------------------------


async def test_aclose_cancels_before_it_returns(env_emu):
    env_emu.inject(Faults(stall_after=2))
    stream = Replicate.create_async_generator(LLAMA, HI)
    await stream.__anext__()
    await stream.aclose()
    assert env_emu.cancels == [only_prediction(env_emu).id]
    assert only_prediction(env_emu).status == "canceled"


async def test_task_cancellation_cancels_the_prediction(env_emu):
    env_emu.inject(Faults(stall_after=2))
    first = asyncio.Event()

    async def consume():
        async for _ in Replicate.create_async_generator(LLAMA, HI):
            first.set()

    task = asyncio.ensure_future(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env_emu.cancels == [only_prediction(env_emu).id]


async def test_exception_in_the_loop_body_cancels_with_async_with(env_emu):
    env_emu.inject(Faults(stall_after=2))
    with pytest.raises(KeyError):
        async with Replicate.create_async_generator(LLAMA, HI) as stream:
            async for _ in stream:
                raise KeyError("consumer bug")
    assert env_emu.cancels == [only_prediction(env_emu).id]


async def test_finished_stream_cancels_nothing(env_emu):
    await collect()
    assert env_emu.cancels == []


# -- proxies and the shared session -----------------------------------------------------------


async def test_proxy_argument_routes_every_request(env_emu):
    with ForwardProxy() as proxy:
        text = await collect(proxy=proxy.url)
    assert text and len(proxy.seen) == len(env_emu.requests) >= 3
    assert any(env_emu.stream_base in seen for seen in proxy.seen)


async def test_proxy_environment_variables_never_carry_loopback_traffic(env_emu, monkeypatch):
    # The emulator is on this machine: HTTP_PROXY must not see it (nor its token).
    # The proxy variables for other hosts are tested in test_token_reach.py.
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        assert await collect()
    assert proxy.seen == [] and len(env_emu.requests) >= 3


async def test_socks_proxy_is_refused_clearly(env_emu):
    with pytest.raises(InvalidRequestError, match="not an http"):
        await collect(proxy="socks5://127.0.0.1:1080")


async def test_one_session_per_loop_reused(env_emu):
    await collect()
    first = await sessions.shared_session()
    await collect()
    assert await sessions.shared_session() is first and not first.closed


def test_session_is_closed_when_asyncio_run_ends(env_emu):
    async def main():
        await collect()
        return await sessions.shared_session()

    session = asyncio.run(main())
    assert session.closed
    assert not any(loop.is_closed() for loop in sessions._states)


async def test_stop_while_the_create_is_under_way_cancels_what_it_made(env_emu):
    await collect()  # warm the schema cache: the next request is the create itself
    env_emu.inject(Faults(slow_create=0.5, tokens_per_second=5))
    stops = StopReport()

    async def watched():
        with stops.watching():
            await collect()

    task = asyncio.ensure_future(watched())
    while len(env_emu.predictions) < 2:  # created on the server, the answer not yet back
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stops.settled(10)  # the answer arrives in the background, then the cancel goes out
    made = [p for p in env_emu.predictions.values() if p.status != "succeeded"]
    assert [p.id for p in made] == env_emu.cancels and made[0].status == "canceled"
    assert stops.message() == "cancelled"


async def test_stop_during_a_rate_limit_wait_creates_nothing(env_emu):
    await collect()
    env_emu.inject(Faults(rate_limit=1, retry_after=5))
    task = asyncio.ensure_future(collect())
    while len(creates(env_emu)) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(env_emu.predictions) == 1 and env_emu.cancels == []
