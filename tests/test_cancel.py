"""Nothing bills in the dark: every way a turn can stop cancels its prediction, and says so.

Through the real entry points (``Replicate.create_async_generator``, ``ChatSession.ask``,
``BackgroundLoop``) against the emulator on 127.0.0.1. Each test counts the cancels the
server received; the outcome the user would be told comes from ``StopReport``.
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import logging
import threading
import time
import warnings

import pytest
from aiohttp import web

from replicate_magic import Replicate, ResponseError, sessions
from replicate_magic.cancels import StopReport
from replicate_magic.chat import ChatSession, TurnRequest
from replicate_magic.conversation import ConversationStore
from replicate_magic.emulator import Faults
from replicate_magic.loop import BackgroundLoop

from .conftest import TOKEN
from .hostile import PREDICTION_ID, Hostile

LLAMA = "meta/meta-llama-3-70b-instruct"
HI = [{"role": "user", "content": "Hi"}]


def only(emu):
    (prediction,) = emu.predictions.values()
    return prediction


def cancel_posts(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/cancel")]


def turn(on_token=lambda token: None):
    return ChatSession(ConversationStore()).ask(TurnRequest("Hi", use_history=False), on_token=on_token)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@pytest.fixture
def background():
    loop = BackgroundLoop("replicate-magic-test-loop")
    yield loop
    loop.stop()


# -- an interrupt, a stop, a cancelled task -------------------------------------------------------


def test_an_interrupt_during_a_slow_create_returns_at_once_and_cancels_when_it_answers(env_emu, background):
    env_emu.inject(Faults(slow_create=2.0, tokens_per_second=5))  # it runs; its answer is 2 s away
    stops = StopReport()

    async def watched():
        with stops.watching():
            await turn()

    def interrupt_once_created():
        wait_until(lambda: env_emu.predictions)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_created, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        background.run(watched())
    # Back before the create answered: nothing could be cancelled yet, and the user is told so.
    assert env_emu.cancels == []
    assert stops.message() == ("Replicate had not answered the create yet: what it makes is cancelled "
                               "when it answers")
    assert stops.wait(10)
    assert env_emu.cancels == [only(env_emu).id] and only(env_emu).status == "canceled"
    assert stops.message() == "cancelled"


async def test_a_cancelled_task_waits_for_its_create_however_slow(env_emu):
    env_emu.inject(Faults(slow_create=1.5, tokens_per_second=5))
    stops = StopReport()

    async def watched():
        with stops.watching():
            await turn()

    task = asyncio.ensure_future(watched())
    while not env_emu.predictions:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stops.settled(10)
    assert env_emu.cancels == [only(env_emu).id] and only(env_emu).status == "canceled"
    assert [outcome.cancelled for outcome in stops.outcomes] == [True]


async def test_a_cancel_answered_500_is_tried_again(env_emu):
    env_emu.inject(Faults(stall_after=2))
    stops = StopReport()
    with stops.watching():
        stream = Replicate.create_async_generator(LLAMA, HI)
        await stream.__anext__()
        env_emu.inject(Faults(server_error=1))  # the next API request is the cancel
        await stream.aclose()
    assert len(cancel_posts(env_emu)) == 2 and env_emu.cancels == [only(env_emu).id]
    assert stops.message() == "cancelled"


async def test_a_cancel_that_keeps_failing_says_what_may_still_run(env_emu):
    env_emu.inject(Faults(stall_after=2))
    stops = StopReport()
    with stops.watching():
        stream = Replicate.create_async_generator(LLAMA, HI)
        await stream.__anext__()
        env_emu.inject(Faults(server_error=3))  # every try of the cancel fails
        await stream.aclose()
    prediction_id = only(env_emu).id
    assert len(cancel_posts(env_emu)) == 3 and env_emu.cancels == []
    assert stops.message() == (f"could not cancel {prediction_id}: it may still be running, "
                               f"see https://replicate.com/p/{prediction_id}")
    # It stays in the registry: when the loop shuts down, its cancel is tried once more.
    assert sessions.inflight().open == [prediction_id]


async def test_the_stream_keeps_the_cancel_outcome(env_emu):
    from replicate_magic.client import ReplicateClient
    from replicate_magic.inputs import Settings
    from replicate_magic.streaming import PredictionStream

    env_emu.inject(Faults(stall_after=1))
    stream = PredictionStream(await ReplicateClient.connect(), LLAMA, HI, Settings())
    tokens = stream.tokens()
    await tokens.__anext__()
    await tokens.aclose()
    assert stream.cancel_outcome is not None and stream.cancel_outcome.cancelled
    assert stream.cancel_outcome.prediction_id == only(env_emu).id == env_emu.cancels[0]
    assert await stream.cancel() is stream.cancel_outcome and len(env_emu.cancels) == 1  # once


async def test_a_finished_turn_reports_nothing_to_cancel(env_emu):
    stops = StopReport()
    with stops.watching():
        await turn()
    assert env_emu.cancels == [] and stops.message() == "nothing was running on Replicate"


# -- the loop's stop (kernel shutdown and restart) --------------------------------------------------


def test_stopping_the_loop_cancels_a_streaming_panel_turn(env_emu, background, caplog):
    caplog.set_level(logging.WARNING)
    env_emu.inject(Faults(stall_after=2))
    first = threading.Event()
    future = background.submit(turn(on_token=lambda token: first.set()))
    assert first.wait(10)
    background.stop()
    assert env_emu.cancels == [only(env_emu).id] and only(env_emu).status == "canceled"
    assert future.cancelled()
    assert "already running" not in caplog.text and "Task was destroyed" not in caplog.text


def test_stopping_the_loop_waits_for_a_create_under_way_then_cancels_it(env_emu, background):
    env_emu.inject(Faults(slow_create=1.0, tokens_per_second=5))
    background.submit(turn())
    wait_until(lambda: env_emu.predictions)
    background.stop()
    assert env_emu.cancels == [only(env_emu).id] and only(env_emu).status == "canceled"


def test_stopping_a_loop_whose_thread_ended_still_cancels(env_emu, background):
    env_emu.inject(Faults(stall_after=2))
    first = threading.Event()
    background.submit(turn(on_token=lambda token: first.set()))
    assert first.wait(10)
    loop = background.loop
    loop.call_soon_threadsafe(loop.stop)  # someone else stops it mid-stream: nothing runs it now
    wait_until(lambda: not loop.is_running())
    background.stop()  # runs the shutdown from this thread
    assert env_emu.cancels == [only(env_emu).id] and loop.is_closed()


def test_a_stopped_loop_starts_again_on_next_use(env_emu, background):
    background.stop()
    assert background.run(turn()).text


# -- the HTTP session closed mid-turn -----------------------------------------------------------------


async def test_closing_the_session_mid_turn_cancels_and_ends_the_turn(env_emu):
    env_emu.inject(Faults(stall_after=2))
    first = asyncio.Event()
    task = asyncio.ensure_future(turn(on_token=lambda token: first.set()))
    await first.wait()
    await sessions.close_session()
    with pytest.raises(ResponseError) as caught:
        await asyncio.wait_for(task, 10)  # not the idle limit (180 s)
    assert env_emu.cancels == [only(env_emu).id]
    assert "\n" not in str(caught.value)


async def test_a_session_closed_by_someone_else_ends_the_turn_and_cancels(env_emu):
    env_emu.inject(Faults(stall_after=2))
    first = asyncio.Event()
    task = asyncio.ensure_future(turn(on_token=lambda token: first.set()))
    await first.wait()
    await (await sessions.shared_session()).close()  # not through us: nothing drains first
    with pytest.raises(ResponseError, match="The HTTP session was closed while the reply streamed"):
        await asyncio.wait_for(task, 10)
    assert env_emu.cancels == [only(env_emu).id]  # sent over a new session


def test_a_script_that_ends_mid_stream_cancels_the_prediction(env_emu):
    env_emu.inject(Faults(stall_after=2))

    async def main():
        stream = Replicate.create_async_generator(LLAMA, HI)
        await stream.__anext__()  # and return with the stream still open

    asyncio.run(main())
    assert env_emu.cancels == [only(env_emu).id]


# -- a loop thread that a task tried to kill ------------------------------------------------------------


async def _exits() -> None:
    raise SystemExit(3)


def test_a_task_raising_systemexit_does_not_end_the_loop(env_emu, background):
    with pytest.raises(SystemExit):
        background.run(_exits())
    assert background.run(asyncio.sleep(0, "still here")) == "still here"


def test_a_streaming_turn_survives_a_sibling_that_raised_keyboardinterrupt(env_emu, background):
    env_emu.inject(Faults(tokens=["a", "b", "c", "d"], tokens_per_second=10))
    future = background.submit(turn())

    async def interrupts() -> None:
        raise KeyboardInterrupt

    background.submit(interrupts())
    assert future.result(10).text == "abcd"


def test_a_loop_thread_that_ended_is_replaced(env_emu, background):
    assert background.run(asyncio.sleep(0, 1)) == 1
    loop = background.loop
    loop.call_soon_threadsafe(loop.stop)  # someone else stops it: its thread ends
    wait_until(lambda: not loop.is_running())
    assert background.run(turn()).text  # a new thread runs the same loop


def test_stopping_the_loop_while_a_turn_asks_for_its_metrics_leaves_no_session_open(monkeypatch):
    async def slow_get(server: Hostile, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)  # the metrics request is under way when the loop stops
        return web.json_response(server.prediction(status="succeeded"))

    with Hostile(get=slow_get) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
        monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
        loop = BackgroundLoop("replicate-magic-test-loop")
        result = loop.run(ChatSession(ConversationStore()).ask(
            TurnRequest("Hi", model="someone/model", use_history=False), on_token=lambda token: None))
        wait_until(lambda: server.seen(f"/v1/predictions/{PREDICTION_ID}"))
        loop.stop()
        gc.collect()
    assert result.text == "Hi" and result.reported is not None and result.reported.done()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
