"""What batch runs need from the emulator (issue 12), over real sockets (aiohttp; no mocks):
an enforced create rate limit (a token bucket, 429 with Retry-After), per-prompt fault markers,
and the number of predictions in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from replicate_magic.emulator import Emulator, Faults
from replicate_magic.emulator.models import MODELS
from replicate_magic.emulator.responder import respond, tokenize

TOKEN = "batch-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LLAMA = "meta/meta-llama-3-70b-instruct"
GPT = "openai/gpt-4o-mini"
FLUX = "black-forest-labs/flux-schnell"
TERMINAL = ("succeeded", "failed", "canceled", "aborted")


# -- helpers -------------------------------------------------------------------
@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def emu() -> Any:
    with Emulator(token=TOKEN) as emulator:
        yield emulator


async def post(session: aiohttp.ClientSession, emu: Emulator, input: dict[str, Any], model: str = LLAMA,
               url: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, Any, Any]:
    """(status, headers, parsed body) of a create."""
    url = url or f"{emu.base_url}/v1/models/{model}/predictions"
    async with session.post(url, json=body if body is not None else {"input": input}, headers=AUTH) as r:
        return r.status, r.headers, await r.json(content_type=None)


async def create(session: aiohttp.ClientSession, emu: Emulator, prompt: str, model: str = LLAMA) -> dict[str, Any]:
    status, _, pred = await post(session, emu, {"prompt": prompt}, model)
    assert status == 201, pred
    return pred


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=AUTH) as r:
        assert r.status == 200
        return await r.json()


async def wait_status(session: aiohttp.ClientSession, pred: dict[str, Any],
                      statuses: tuple[str, ...] = TERMINAL, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await get(session, pred["urls"]["get"])
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"prediction stayed {body['status']}")


async def stream(session: aiohttp.ClientSession, pred: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(event, data, arrival time) of each SSE event, to the end of the stream."""
    events: list[tuple[str, str, float]] = []
    name, data = "", []
    async with session.get(pred["urls"]["stream"], headers={**AUTH, "Accept": "text/event-stream"}) as r:
        assert r.status == 200
        async for raw in r.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if name:
                    events.append((name, "\n".join(data), time.monotonic()))
                name, data = "", []
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    return events


def outputs(events: list[tuple[str, str, float]]) -> list[str]:
    return [data for name, data, _ in events if name == "output"]


def reply_tokens(prompt: str, model: str = LLAMA) -> list[str]:
    return tokenize(respond(model, {"prompt": prompt}, MODELS[model].properties))


def throttle_body(seconds: int) -> dict[str, Any]:
    unit = "second" if seconds == 1 else "seconds"
    return {"detail": f"Request was throttled. Expected available in {seconds} {unit}.", "status": 429}


def assert_within_bucket(times: list[float], per_minute: float, burst: int) -> None:
    """No window [t_i, t_j] holds more creates than a full bucket plus what refilled in it."""
    rate = per_minute / 60
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6, (i, j, times[j] - times[i])


# -- the create rate limit ---------------------------------------------------------
async def test_a_burst_passes_then_429_with_the_body_and_retry_after(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, create_rate_limit=60, create_burst=5) as emu:
        assert (emu.create_rate_limit, emu.create_burst) == (60, 5)
        remaining = []
        for i in range(5):
            status, headers, _ = await post(session, emu, {"prompt": f"item {i}"})
            assert status == 201
            remaining.append(int(headers["ratelimit-remaining"]))
            assert int(headers["ratelimit-reset"]) >= 1
        assert remaining == [4, 3, 2, 1, 0]  # the bucket, not a per-minute count
        status, headers, body = await post(session, emu, {"prompt": "one too many"})
        assert status == 429
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["Retry-After"] == "1"  # a token a second: under a second away, said as 1
        assert body == throttle_body(1)
        assert len(emu.predictions) == 5 and len(emu.create_times) == 5 and len(emu.throttled) == 1
        assert all(p.input["prompt"] != "one too many" for p in emu.predictions.values())


async def test_retry_after_counts_whole_seconds_to_the_next_token(session: aiohttp.ClientSession) -> None:
    # Replicate's low-credit limit: 6 a minute with a burst of 1.
    with Emulator(token=TOKEN, create_rate_limit=6, create_burst=1) as emu:
        assert (await post(session, emu, {"prompt": "a"}))[0] == 201
        status, headers, body = await post(session, emu, {"prompt": "b"})
        assert status == 429 and headers["Retry-After"] == "10" and body == throttle_body(10)
        await asyncio.sleep(1.1)
        status, headers, body = await post(session, emu, {"prompt": "b"})
        assert status == 429 and headers["Retry-After"] == "9" and body == throttle_body(9)
        assert len(emu.throttled) == 2 and len(emu.predictions) == 1


async def test_every_create_route_shares_the_bucket_and_other_endpoints_are_not_limited(
        session: aiohttp.ClientSession) -> None:
    llama = MODELS[LLAMA]
    with Emulator(token=TOKEN, create_rate_limit=60, create_burst=3,
                  deployments={"acme/chat": LLAMA}) as emu:
        routes = [
            (f"{emu.base_url}/v1/models/{LLAMA}/predictions", {"input": {"prompt": "m"}}),
            (f"{emu.base_url}/v1/predictions", {"version": llama.version_id, "input": {"prompt": "v"}}),
            (f"{emu.base_url}/v1/deployments/acme/chat/predictions", {"input": {"prompt": "d"}}),
        ]
        for url, body in routes:
            assert (await post(session, emu, {}, url=url, body=body))[0] == 201
        for url, body in routes:
            status, headers, answer = await post(session, emu, {}, url=url, body=body)
            assert status == 429 and answer == throttle_body(1) and headers["Retry-After"] == "1"
        assert len(emu.predictions) == 3 and len(emu.throttled) == 3
        for _ in range(20):  # reads are not creates
            async with session.get(f"{emu.base_url}/v1/account", headers=AUTH) as r:
                assert r.status == 200 and "ratelimit-remaining" in r.headers
        pred = next(iter(emu.predictions.values()))
        assert (await get(session, f"{emu.base_url}/v1/predictions/{pred.id}"))["id"] == pred.id
        async with session.post(f"{emu.base_url}/v1/predictions/{pred.id}/cancel", headers=AUTH) as r:
            assert r.status == 200


async def test_the_bucket_refills_over_time(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, create_rate_limit=120, create_burst=2) as emu:  # a token every 0.5 s
        assert [(await post(session, emu, {"prompt": str(i)}))[0] for i in range(3)] == [201, 201, 429]
        await asyncio.sleep(0.55)
        status, headers, _ = await post(session, emu, {"prompt": "refilled"})
        assert status == 201 and headers["ratelimit-remaining"] == "0"
        assert (await post(session, emu, {"prompt": "again"}))[0] == 429
        await asyncio.sleep(1.1)  # two more tokens: the bucket is full again
        assert [(await post(session, emu, {"prompt": f"x{i}"}))[0] for i in range(3)] == [201, 201, 429]


async def test_accepted_creates_never_exceed_the_bucket_over_any_window(session: aiohttp.ClientSession) -> None:
    per_minute, burst = 240, 3  # 4 a second
    with Emulator(token=TOKEN, create_rate_limit=per_minute, create_burst=burst) as emu:
        statuses: list[int] = []
        end = time.monotonic() + 1.5

        async def hammer(worker: int) -> None:
            n = 0
            while time.monotonic() < end:
                statuses.append((await post(session, emu, {"prompt": f"w{worker} {n}"}))[0])
                n += 1

        await asyncio.gather(*(hammer(w) for w in range(4)))
        assert set(statuses) == {201, 429}
        accepted = list(emu.create_times)
        assert statuses.count(201) == len(accepted) == len(emu.predictions)
        assert statuses.count(429) == len(emu.throttled)
        assert accepted == sorted(accepted)
        assert_within_bucket(accepted, per_minute, burst)
        # Over 1.5 s: at most the burst plus 6 refilled (and at least most of them were used).
        assert burst + 3 <= len(accepted) <= burst + 4 * (accepted[-1] - accepted[0]) + 1


async def test_default_limit_is_replicates_600_a_minute(emu: Emulator, session: aiohttp.ClientSession) -> None:
    assert (emu.create_rate_limit, emu.create_burst) == (600, 600)
    status, headers, _ = await post(session, emu, {"prompt": "Hi"})
    # As recorded (replicate-python tests/cassettes/run__concurrently.yaml): 599 left, reset 1.
    assert status == 201 and headers["ratelimit-remaining"] == "599" and headers["ratelimit-reset"] == "1"
    results = await asyncio.gather(*(post(session, emu, {"prompt": str(i)}) for i in range(100)))
    assert all(status == 201 for status, _, _ in results) and not emu.throttled


async def test_no_limit_with_none_or_zero(session: aiohttp.ClientSession) -> None:
    for limit in (None, 0):
        with Emulator(token=TOKEN, create_rate_limit=limit) as emu:
            assert emu.create_rate_limit is None and emu.create_burst is None
            results = await asyncio.gather(*(post(session, emu, {"prompt": str(i)}) for i in range(30)))
            assert all(status == 201 and "ratelimit-remaining" in headers for status, headers, _ in results)
            assert len(emu.create_times) == 30 and not emu.throttled


def test_bad_limits_are_refused() -> None:
    for kwargs in ({"create_rate_limit": -1}, {"create_rate_limit": float("inf")},
                   {"create_rate_limit": float("nan")}, {"create_burst": 0}, {"create_burst": 2.5},
                   {"create_burst": True}):
        with pytest.raises(ValueError):
            Emulator(**kwargs)  # type: ignore[arg-type]


async def test_what_takes_a_token(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, create_rate_limit=60, create_burst=2) as emu:
        url = f"{emu.base_url}/v1/models/{LLAMA}/predictions"
        async with session.post(url, json={"input": {"prompt": "x"}}, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401  # refused before the throttle: no token taken
        emu.inject(Faults(rate_limit=1))
        status, _, body = await post(session, emu, {"prompt": "x"})
        assert status == 429 and body == {"detail": "Request was throttled. Expected available in 1 second."}
        # An invalid create passed the throttle, as a limit in front of the handler counts it.
        assert (await post(session, emu, {"prompt": 5}))[0] == 422
        assert (await post(session, emu, {"prompt": "ok"}))[0] == 201
        assert (await post(session, emu, {"prompt": "over"}))[0] == 429
        assert len(emu.create_times) == 2 and len(emu.throttled) == 2 and len(emu.predictions) == 1


# -- per-prompt markers ------------------------------------------------------------
async def test_fail_marker_fails_only_its_item_in_a_batch(emu: Emulator, session: aiohttp.ClientSession) -> None:
    prompts = [f"item {i}" + (" [[emulator:fail]]" if i == 7 else "") for i in range(12)]
    preds = await asyncio.gather(*(create(session, emu, p) for p in prompts))
    streams = await asyncio.gather(*(stream(session, p) for p in preds))
    for i, (prompt, pred, events) in enumerate(zip(prompts, preds, streams, strict=True)):
        final = await get(session, pred["urls"]["get"])
        names = [name for name, _, _ in events]
        if i == 7:
            assert outputs(events) == reply_tokens(prompt)[:3]  # a few tokens, then the error
            assert names[-2:] == ["error", "done"]
            assert json.loads(events[-2][1]) == {"detail": "CUDA out of memory (emulated)"}
            assert json.loads(events[-1][1]) == {"reason": "error"}
            assert final["status"] == "failed" and final["error"] == "CUDA out of memory (emulated)"
        else:
            assert outputs(events) == reply_tokens(prompt) and names[-1] == "done" and "error" not in names
            assert final["status"] == "succeeded" and final["error"] is None


async def test_fail_marker_takes_a_token_count(emu: Emulator, session: aiohttp.ClientSession) -> None:
    none = await create(session, emu, "fails at once [[emulator:fail=0]]")
    events = await stream(session, none)
    assert outputs(events) == [] and (await get(session, none["urls"]["get"]))["status"] == "failed"
    late = await create(session, emu, "fails late [[emulator:fail=99999]]")  # past the reply: at its end
    events = await stream(session, late)
    assert outputs(events) == reply_tokens("fails late [[emulator:fail=99999]]")
    assert [name for name, _, _ in events][-2:] == ["error", "done"]


async def test_fail_create_marker_answers_422_and_creates_nothing(emu: Emulator,
                                                                  session: aiohttp.ClientSession) -> None:
    status, headers, body = await post(session, emu, {"prompt": "item 3 [[emulator:fail-create]]"})
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
    assert list(body) == ["detail", "status", "title", "invalid_fields"]  # Replicate's validation body
    assert body["title"] == "Input validation failed" and body["status"] == 422
    assert body["invalid_fields"] == [{"type": "emulator_marker", "field": "input.prompt",
                                       "description": "Rejected by its [[emulator:fail-create]] marker"}]
    assert body["detail"] == "- input.prompt: Rejected by its [[emulator:fail-create]] marker\n"
    assert len(emu.predictions) == 0
    assert (await post(session, emu, {"prompt": "item 4"}))[0] == 201


async def test_5xx_once_marker_fails_the_first_create_of_that_text(emu: Emulator,
                                                                   session: aiohttp.ClientSession) -> None:
    marked = "item 9 [[emulator:5xx-once]]"
    status, headers, body = await post(session, emu, {"prompt": marked})
    assert status == 500 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 500 and len(emu.predictions) == 0
    pred = await create(session, emu, marked)  # the retry works
    assert outputs(await stream(session, pred)) == reply_tokens(marked)
    assert (await post(session, emu, {"prompt": "item 10 [[emulator:5xx-once]]"}))[0] == 500  # its own first
    assert (await post(session, emu, {"prompt": "item 11"}))[0] == 201
    assert len(emu.predictions) == 2


async def test_stall_marker_streams_then_stalls_until_canceled(emu: Emulator, session: aiohttp.ClientSession) -> None:
    stalled = await create(session, emu, "item 1 [[emulator:stall]]")
    other = await create(session, emu, "item 2")
    reader = asyncio.create_task(stream(session, stalled))
    assert outputs(await stream(session, other)) == reply_tokens("item 2")
    await asyncio.sleep(0.3)
    body = await get(session, stalled["urls"]["get"])
    assert body["status"] == "processing" and body["output"] == reply_tokens("item 1 [[emulator:stall]]")[:3]
    assert not reader.done()
    async with session.post(stalled["urls"]["cancel"], headers=AUTH) as r:
        assert r.status == 200
    events = await asyncio.wait_for(reader, 5)
    assert outputs(events) == body["output"] and json.loads(events[-1][1]) == {"reason": "canceled"}
    assert (await get(session, stalled["urls"]["get"]))["status"] == "canceled"


async def test_slow_marker_spreads_that_items_tokens(emu: Emulator, session: aiohttp.ClientSession) -> None:
    slow, fast = await asyncio.gather(create(session, emu, "item 5 [[emulator:slow=0.8]]"),
                                      create(session, emu, "item 6"))
    started = time.monotonic()
    slow_events, fast_events = await asyncio.gather(stream(session, slow), stream(session, fast))
    slow_out = [t for name, _, t in slow_events if name == "output"]
    fast_out = [t for name, _, t in fast_events if name == "output"]
    assert len(slow_out) == len(reply_tokens("item 5 [[emulator:slow=0.8]]")) > 10
    assert 0.6 <= slow_out[-1] - started <= 3.0  # about 0.8 s in all
    assert 0.2 <= slow_out[len(slow_out) // 2] - slow_out[0] <= 0.6  # paced evenly, not all at the end
    assert fast_out[-1] - started < 0.5


async def test_markers_come_from_the_last_user_message(emu: Emulator, session: aiohttp.ClientSession) -> None:
    messages = [{"role": "user", "content": "first [[emulator:fail-create]]"},
                {"role": "assistant", "content": "You said [[emulator:fail-create]]"},
                {"role": "user", "content": [{"type": "text", "text": "second [[emulator:fail=0]]"}]}]
    status, _, pred = await post(session, emu, {"messages": messages}, GPT)
    assert status == 201  # the earlier turn's marker does not fire again
    assert (await wait_status(session, pred))["status"] == "failed"
    status, _, body = await post(session, emu, {"messages": messages[:1]}, GPT)
    assert status == 422 and body["invalid_fields"][0]["field"] == "input.messages"
    # A transcript in `prompt`: only its last User: block counts.
    transcript = "User: a [[emulator:fail-create]]\nAssistant: b\nUser: c"
    pred = await create(session, emu, transcript)
    assert (await wait_status(session, pred))["status"] == "succeeded"
    system = {"prompt": "plain", "system_prompt": "[[emulator:fail-create]]"}
    assert (await post(session, emu, system))[0] == 201


async def test_unknown_or_malformed_markers_are_refused(emu: Emulator, session: aiohttp.ClientSession) -> None:
    for prompt, words in (("[[emulator:fial]]", "unknown emulator marker [[emulator:fial]]"),
                          ("[[emulator:slow=soon]]", "needs seconds"), ("[[emulator:fail=-1]]", "whole number"),
                          ("[[emulator:fail-create=1]]", "takes no value")):
        status, _, body = await post(session, emu, {"prompt": f"x {prompt}"})
        assert status == 422 and body["title"] == "Input validation failed", prompt
        assert words in body["invalid_fields"][0]["description"], body
    assert len(emu.predictions) == 0
    assert (await post(session, emu, {"prompt": "[emulator:fail] [[emulator fail]]"}))[0] == 201  # not markers


async def test_markers_on_an_image_model_count_steps(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, "a cat [[emulator:fail=2]]", FLUX)
    body = await wait_status(session, pred)
    assert body["status"] == "failed" and body["output"] is None and "2/4" in body["logs"]
    assert "3/4" not in body["logs"]
    ok = await create(session, emu, "a dog", FLUX)
    assert (await wait_status(session, ok))["status"] == "succeeded"


async def test_markers_add_to_injected_faults(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(error_message="GPU fell off the bus", logs=["injected line"]))
    pred = await create(session, emu, "x [[emulator:fail=1]]")
    body = await wait_status(session, pred)
    assert body["error"] == "GPU fell off the bus" and "injected line" in body["logs"]
    assert len(body["output"]) == 1


# -- predictions in flight ---------------------------------------------------------
async def test_in_flight_counts_predictions_until_terminal(emu: Emulator, session: aiohttp.ClientSession) -> None:
    assert (emu.in_flight, emu.peak_in_flight) == (0, 0)
    stalled = await asyncio.gather(*(create(session, emu, f"s{i} [[emulator:stall]]") for i in range(5)))
    assert (emu.in_flight, emu.peak_in_flight) == (5, 5)
    for pred in stalled[:2]:
        async with session.post(pred["urls"]["cancel"], headers=AUTH) as r:
            assert r.status == 200
    assert (emu.in_flight, emu.peak_in_flight) == (3, 5)
    failed = await create(session, emu, "f [[emulator:fail=0]]")
    done = await create(session, emu, "plain")
    await wait_status(session, failed)
    await wait_status(session, done)
    assert (emu.in_flight, emu.peak_in_flight) == (3, 5)  # at most 5 at once: 3 stalled and these two
    for pred in stalled[2:]:
        async with session.post(pred["urls"]["cancel"], headers=AUTH) as r:
            assert r.status == 200
    async with session.post(stalled[0]["urls"]["cancel"], headers=AUTH) as r:  # again: counted once
        assert r.status == 200
    assert emu.in_flight == 0


async def test_peak_in_flight_of_a_concurrent_batch(emu: Emulator, session: aiohttp.ClientSession) -> None:
    preds = await asyncio.gather(*(create(session, emu, f"b{i} [[emulator:slow=0.5]]") for i in range(20)))
    assert emu.peak_in_flight == 20
    await asyncio.gather(*(wait_status(session, p) for p in preds))
    assert emu.in_flight == 0 and emu.peak_in_flight == 20
    for _ in range(3):  # one after another: never more than one at once
        await wait_status(session, await create(session, emu, "one at a time"))
    assert emu.peak_in_flight == 20 and emu.in_flight == 0


async def test_refused_creates_and_evicted_predictions_leave_the_count(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, max_predictions=2) as emu:
        for prompt in ("[[emulator:fail-create]]", "[[emulator:5xx-once]]", "[[emulator:nope]]"):
            assert (await post(session, emu, {"prompt": prompt}))[0] in (422, 500)
        assert emu.peak_in_flight == 0
        for i in range(3):  # the third create evicts the oldest, which is stopped
            await create(session, emu, f"{i} [[emulator:stall]]")
        assert len(emu.predictions) == 2 and emu.in_flight == 2 and emu.peak_in_flight == 3
    assert emu.in_flight == 0  # closing stops the others
