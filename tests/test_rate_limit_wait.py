"""Waits for Replicate's rate limit are told as they start, and counted in the metrics line.

Against the emulator's 429 with ``Retry-After`` over real sockets, through
``ChatSession.ask`` (the status callback the magic and the panel pass) and the magic.
"""

from __future__ import annotations

import pytest

from replicate_magic.chat import ChatSession, Metrics, TurnRequest
from replicate_magic.client import ReplicateClient
from replicate_magic.conversation import ConversationStore
from replicate_magic.emulator import Faults
from replicate_magic.inputs import Settings
from replicate_magic.streaming import PredictionStream

LLAMA = "meta/meta-llama-3-70b-instruct"
WAITED = "waited 1.0 s for the rate limit"


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")]


def waits(lines: list[str]) -> list[str]:
    """The client's lines among the model's own (the emulator's boot logs come the same way)."""
    return [line for line in lines if line.startswith("rate limited")]


@pytest.fixture
def session(env_emu):
    return ChatSession(ConversationStore())


async def test_the_status_callback_hears_the_wait_as_it_starts(session, env_emu):
    env_emu.inject(Faults(rate_limit=1, retry_after=1))
    told: list[tuple[str, int]] = []

    def on_log(line: str) -> None:  # and how many creates had gone out when it was told
        told.append((line, len(creates(env_emu))))

    result = await session.ask(TurnRequest("Hi", model=LLAMA, use_history=False), lambda token: None, on_log=on_log)
    assert result.text and told[0] == ("rate limited by Replicate; retrying in 1 s (try 2 of 4)", 1)
    assert waits([line for line, _ in told]) == [told[0][0]] and len(creates(env_emu)) == 2  # told before the retry
    assert result.metrics.waited == 1.0 and result.metrics.line().endswith(f" · {WAITED}")
    reported = await session.reported_metrics(result)
    assert reported.waited == 1.0 and WAITED in reported.line()


async def test_every_wait_is_told_and_summed(session, env_emu):
    env_emu.inject(Faults(rate_limit=2, retry_after=1))
    told: list[str] = []
    result = await session.ask(TurnRequest("Hi", model=LLAMA, use_history=False), lambda token: None,
                               on_log=told.append)
    assert waits(told) == ["rate limited by Replicate; retrying in 1 s (try 2 of 4)",
                           "rate limited by Replicate; retrying in 1 s (try 3 of 4)"]
    assert result.metrics.waited == 2.0 and "waited 2.0 s for the rate limit" in result.metrics.line()


async def test_no_wait_says_nothing(session, env_emu):
    told: list[str] = []
    result = await session.ask(TurnRequest("Hi", model=LLAMA, use_history=False), lambda token: None,
                               on_log=told.append)
    assert waits(told) == [] and result.metrics.waited == 0.0 and "rate limit" not in result.metrics.line()


async def test_the_stream_keeps_the_seconds_waited(env_emu):
    env_emu.inject(Faults(rate_limit=1, retry_after=0))  # Retry-After: 0 is a wait of none
    told: list[str] = []
    stream = PredictionStream(await ReplicateClient.connect(), LLAMA, [{"role": "user", "content": "Hi"}],
                              Settings(), on_log=told.append)
    assert "".join([t async for t in stream.tokens()])
    assert waits(told) == ["rate limited by Replicate; retrying in 0 s (try 2 of 4)"] and stream.rate_limited_for == 0.0


def test_the_metrics_line_names_the_wait_only_when_there_was_one():
    base = dict(model="m", output_tokens=3, input_tokens=None, time_to_first_token=None, tokens_per_second=None,
                total_time=9.5)
    assert Metrics(**base).line() == "m · 3 tokens · 9.5 s"
    assert Metrics(**base, waited=0.0).line() == "m · 3 tokens · 9.5 s"
    assert Metrics(**base, waited=8.0).line() == "m · 3 tokens · 9.5 s · waited 8.0 s for the rate limit"


def test_the_magics_metrics_line_says_it(ip, env_emu, capsys):
    env_emu.inject(Faults(rate_limit=1, retry_after=1))
    ip.run_cell_magic("replicate", f"-m {LLAMA} --no-history", "Hi")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert WAITED in last and "tokens" in last
