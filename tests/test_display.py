"""The live reply area: coalescing, the final update, plain vs HTML, hostile text inert."""

from __future__ import annotations

import asyncio
import time

import pytest

from replicate_magic.display import FrameThrottle, LiveReply, bundle
from replicate_magic.render import markdown_html, plain_html

from .html_allowlist import violations


class FakeHandle:
    def __init__(self) -> None:
        self.updates: list[dict[str, str]] = []

    def update(self, data, raw=False):
        assert raw
        self.updates.append(data)


def live(fmt="markdown", frame_rate=20.0):
    reply = LiveReply(fmt, rich=True, frame_rate=frame_rate)
    reply._handle = FakeHandle()  # what start() gets from IPython's display()
    return reply


async def test_a_burst_of_tokens_is_one_or_two_frames_and_the_last_is_whole():
    reply = live()
    for index in range(1000):
        reply.append(f" t{index}")
    await asyncio.sleep(0.12)  # the coalescing timer publishes what the burst held back
    updates = reply._handle.updates
    assert 1 <= len(updates) <= 2
    assert updates[-1]["text/plain"] == "".join(f" t{i}" for i in range(1000))
    reply.finish()
    assert reply._handle.updates[-1]["text/html"] == markdown_html(reply.text)


async def test_slow_tokens_each_show_without_waiting_for_the_next():
    reply = live(frame_rate=50)
    shown = []
    for token in ["a", "b", "c"]:
        reply.append(token)
        await asyncio.sleep(0.05)
        shown.append(reply._handle.updates[-1]["text/plain"])
    assert shown == ["a", "ab", "abc"]


async def test_no_frame_after_finish():
    reply = live()
    reply.append("x")
    reply.append("y")  # held back by the frame interval: a timer is pending
    reply.finish("interrupted")
    count = len(reply._handle.updates)
    await asyncio.sleep(0.1)
    assert len(reply._handle.updates) == count
    assert reply._handle.updates[-1] == {
        "text/plain": "xy\n\n[interrupted]", "text/html": markdown_html("xy") + plain_html("interrupted")}


def test_status_shows_until_the_first_token():
    reply = live()
    reply._status = "asking m…"
    assert reply._bundle() == {"text/plain": "[asking m…]", "text/html": plain_html("asking m…")}
    reply.text = "Hi"
    assert reply._bundle() == {"text/plain": "Hi", "text/html": markdown_html("Hi", live=True)}


def test_a_hostile_status_line_is_text():
    reply = live()
    reply.status('<img src=x onerror="window.pwned=1"> booting')
    data = reply._bundle()
    assert violations(data["text/html"]) == []
    assert "&lt;img src=x" in data["text/html"]


def test_text_format_has_no_markdown():
    assert bundle("a *b*", "text") == {"text/plain": "a *b*"}


def test_terminal_mode_streams_plain_text(capsys):
    reply = LiveReply("markdown", rich=False)
    reply.start(status="asking…")
    for token in ["Hello", " world"]:
        reply.append(token)
    reply.finish("interrupted")
    assert capsys.readouterr().out == "Hello world\n\n[interrupted]\n"


@pytest.mark.parametrize(
    "reply",
    [
        '<img src=x onerror="alert(1)">',
        "<script>steal()</script>",
        "```html\n<b>kept as code</b>\n```\n<b>not</b>",
        "[click](javascript:alert)",
        "[ref]\n\n[ref]: vbscript:x",
    ],
)
def test_html_in_a_reply_is_text_in_the_html_and_as_typed_in_the_plain_text(reply):
    data = bundle(reply, "markdown")
    assert data["text/plain"] == reply
    assert data["text/html"] == markdown_html(reply)
    assert violations(data["text/html"]) == []


# -- the throttle ---------------------------------------------------------------------------------------


async def test_throttle_publishes_the_latest_state_once_per_frame():
    published: list[float] = []
    throttle = FrameThrottle(lambda: published.append(time.monotonic()), rate=20)
    for _ in range(100):
        throttle.changed()
    assert len(published) == 1  # the first change shows at once
    await asyncio.sleep(0.08)
    assert len(published) == 2  # the rest of the burst, by the timer, without a further change
    throttle.changed()
    throttle.cancel()
    await asyncio.sleep(0.08)
    assert len(published) == 2


async def test_a_slow_frame_stretches_the_wait_after_it():
    now = [0.0]
    published: list[float] = []

    def publish() -> None:  # a frame that costs 100 ms of the (fake) clock
        published.append(now[0])
        now[0] += 0.1

    throttle = FrameThrottle(publish, rate=25, clock=lambda: now[0])
    throttle.changed()
    assert published == [0.0]
    throttle.changed()  # 40 ms would be the frame interval; 4 x 100 ms is the wait now
    assert throttle._timer is not None
    assert abs(throttle._timer.when() - asyncio.get_running_loop().time() - 0.4) < 0.05
    throttle.cancel()
