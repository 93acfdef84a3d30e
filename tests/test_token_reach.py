"""The token's reach: where it is sent, where it is not, and that no message shows it.

The rule (``environment.may_send_token``) as a table, then the rule at work over real
sockets: a hostile server on 127.0.0.1 that also answers as a proxy, so requests meant for
other hosts (``stream.replicate.com``, ``evil.example``) arrive there and show their headers.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from IPython.core.interactiveshell import InteractiveShell

from replicate_magic import MissingAuthError, Replicate, ResponseError
from replicate_magic.emulator import Emulator
from replicate_magic.environment import may_send_token
from replicate_magic.errors import InvalidRequestError, ModelError
from replicate_magic.sessions import proxy_for

from .conftest import TOKEN
from .hostile import PREDICTION_ID, Hostile, event_stream, json_answer

MODEL = "someone/model"
LLAMA = "meta/meta-llama-3-70b-instruct"
HI = [{"role": "user", "content": "Hi"}]
API = "https://api.replicate.com"
LONG_TOKEN = "r8_" + "Q7fz2Lk9Wm4Tx8Vb3Nc6Hd1Jp5Rs0Yg" + "aBcDeF"  # a real token's length


async def collect(base_url: str, model: str = MODEL, **kwargs) -> str:
    kwargs.setdefault("api_key", TOKEN)
    generator = Replicate.create_async_generator(model, HI, base_url=base_url, **kwargs)
    return "".join([token async for token in generator])


def has_token(seen) -> bool:
    return "Authorization" in seen.headers


def no_piece_of(secret: str, text: str, size: int = 6) -> bool:
    return not any(secret[i:i + size] in text for i in range(len(secret) - size + 1))


# -- the rule ------------------------------------------------------------------------------------

REACH = [
    (API, "https://api.replicate.com/v1/predictions", True),
    (API, "https://api.replicate.com:443/v1/x", True),
    (API, "https://streaming.api.replicate.com/v1/predictions/x", True),
    (API, "https://stream.replicate.com/v1/files/x", True),
    (API, "https://stream-b.svc.rno2.c.replicate.net/v1/streams/x", True),
    (API, "https://REPLICATE.COM./p/x", True),
    (API, "http://api.replicate.com/v1/predictions", False),  # clear text, even to Replicate
    (API, "http://api.replicate.com:8080/v1/predictions", False),  # another port of the API host
    (API, "http://stream.replicate.com/v1/streams/x", False),
    (API, "https://replicate.delivery/pbxt/file.png", False),  # files: signed URLs need no token
    (API, "https://evilreplicate.com/x", False),
    (API, "https://replicate.com.evil.example/x", False),
    (API, "https://user:pw@api.replicate.com/v1/x", False),
    (API, "ftp://api.replicate.com/x", False),
    (API, "https://api.replicate.com:99999/x", False),
    ("https://gateway.example", "https://gateway.example/v1/x", True),
    ("https://gateway.example", "https://gateway.example:8443/v1/x", False),
    ("https://gateway.example", "http://gateway.example/v1/x", False),
    ("http://127.0.0.1:8700", "http://127.0.0.1:8700/v1/x", True),
    ("http://127.0.0.1:8700", "http://127.0.0.1:8701/v1/streams/x", True),  # the emulator's stream port
    ("http://127.0.0.1:8700", "http://localhost:8701/v1/streams/x", False),
    ("http://127.0.0.1:8700", "http://192.168.1.5:8700/v1/x", False),
    ("http://localhost:8700", "http://localhost:8700/v1/x", True),
    ("http://[::1]:8700", "http://[::1]:8700/v1/x", True),
    ("http://[::1]:8700", "https://stream.replicate.com/v1/x", True),
]


@pytest.mark.parametrize(("base", "url", "allowed"), REACH)
def test_where_the_token_may_go(base, url, allowed):
    assert may_send_token(url, base) is allowed


@pytest.mark.parametrize(("base", "problem"), [
    ("http://api.replicate.com", "plain http to another machine"),
    ("https://user:pw@api.replicate.com", "user name or password"),
    ("ftp://api.replicate.com", "not an http:// or https:// URL"),
])
async def test_an_unsafe_base_url_is_refused_before_any_request(base, problem):
    with pytest.raises(InvalidRequestError, match=problem) as caught:
        await collect(base)
    assert "pw" not in str(caught.value)


# -- the rule at work ---------------------------------------------------------------------------------


async def needs_token(server: Hostile, request: web.Request) -> web.StreamResponse:
    if "Authorization" not in request.headers:
        return web.json_response({"title": "Unauthenticated", "status": 401}, status=401)
    return await event_stream(request)


async def test_an_http_stream_url_on_a_replicate_host_gets_no_token():
    async def create(server: Hostile, request: web.Request) -> web.StreamResponse:
        urls = {**server.prediction()["urls"], "stream": f"http://stream.replicate.com/v1/streams/{PREDICTION_ID}"}
        return web.json_response(server.prediction(urls=urls), status=201)

    with (
        Hostile(create=create, stream=needs_token) as server,
        pytest.raises(ResponseError, match=r"The stream host stream.replicate.com asked for the API token"),
    ):
        await collect(server.url, proxy=server.url)  # the hostile server is the proxy too: it sees every request
    (stream,) = [seen for seen in server.requests if seen.host == "stream.replicate.com"]
    assert not has_token(stream)
    (cancel,) = server.seen("/v1/predictions/")
    assert cancel.host.startswith("127.0.0.1") and has_token(cancel)  # to the API itself
    assert server.cancels == [PREDICTION_ID]


async def test_foreign_get_and_cancel_urls_are_not_used():
    evil = "http://evil.example/v1/predictions/" + PREDICTION_ID

    async def create(server: Hostile, request: web.Request) -> web.StreamResponse:
        urls = {**server.prediction()["urls"], "get": evil, "cancel": evil + "/cancel"}
        return web.json_response(server.prediction(urls=urls), status=201)

    async def stalls(server: Hostile, request: web.Request) -> web.StreamResponse:
        response = await event_stream(request)
        await server.write("stream", response, b"event: output\ndata: Hi\n\n")
        await asyncio.sleep(30)
        return response

    with (
        Hostile(create=create, stream=stalls) as server,
        pytest.raises(ResponseError, match=r"No data from the stream for 0.5 s"),
    ):
        await collect(server.url, proxy=server.url, timeout=0.5)
    assert [seen for seen in server.requests if seen.host == "evil.example"] == []
    assert server.cancels == [PREDICTION_ID]


async def test_redirects_are_not_followed():
    async def redirect(server: Hostile, request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "http://evil.example/v1/steal"})

    with Hostile(create=redirect) as server, pytest.raises(ResponseError, match="HTTP 307"):
        await collect(server.url, proxy=server.url)
    assert [seen for seen in server.requests if seen.host == "evil.example"] == []


async def test_a_caller_supplied_authorization_header_is_dropped(env_emu):
    stolen = {"Authorization": "Basic c3RvbGVuOmNyZWRz", "accept": "application/json"}
    await collect(env_emu.base_url, LLAMA, headers=stolen)
    assert {r.headers.get("Authorization") for r in env_emu.requests} == {f"Bearer {TOKEN}"}


# -- proxies and netrc ------------------------------------------------------------------------------------


async def test_the_environments_proxy_carries_other_hosts_but_never_loopback(monkeypatch):
    async def create(server: Hostile, request: web.Request) -> web.StreamResponse:
        urls = {**server.prediction()["urls"], "stream": f"http://stream.example.test/v1/streams/{PREDICTION_ID}"}
        return web.json_response(server.prediction(urls=urls), status=201)

    with Hostile(create=create) as server:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        assert await collect(server.url) == "Hi"
    api = [seen for seen in server.requests if seen.host == f"127.0.0.1:{server.port}"]
    stream = [seen for seen in server.requests if seen.host == "stream.example.test"]
    assert api and not any(seen.proxied for seen in api)  # this machine: direct
    assert stream and all(seen.proxied and not has_token(seen) for seen in stream)


@pytest.mark.parametrize(("url", "no_proxy", "expected"), [
    ("http://stream.example.test/x", "", "http://proxy.test:3128"),
    ("http://stream.example.test/x", "example.test", None),
    ("http://stream.example.test/x", ".example.test", None),
    ("http://stream.example.test:8080/x", "stream.example.test:8080", None),
    ("http://stream.example.test/x", "other.test, example.test", None),
    ("http://stream.example.test/x", "*", None),
    ("http://stream.example.test/x", "notexample.test", "http://proxy.test:3128"),
    ("http://127.0.0.1:8700/x", "", None),
    ("http://localhost:8700/x", "", None),
    ("http://[::1]:8700/x", "", None),
    ("https://api.replicate.com/x", "", "http://secure-proxy.test:3128"),
])
def test_proxy_for_honours_no_proxy_and_never_proxies_loopback(monkeypatch, url, no_proxy, expected):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://secure-proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert proxy_for(url) == expected


def test_a_socks_proxy_in_the_environment_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:secret@proxy.test:1080")
    with pytest.raises(InvalidRequestError, match="not an http:// or https:// proxy") as caught:
        proxy_for("https://api.replicate.com/v1/x")
    assert "secret" not in str(caught.value)


async def test_a_netrc_default_entry_is_never_read(env_emu, monkeypatch, tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("default login netrc-user password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    assert await collect(env_emu.base_url, LLAMA)
    assert {r.headers.get("Authorization") for r in env_emu.requests} == {f"Bearer {TOKEN}"}


def test_the_cli_emulator_uses_a_dummy_token_and_no_proxy(monkeypatch, capsys):
    from replicate_magic import __main__ as cli
    from replicate_magic import emulator

    seen: list = []

    class Recording(Emulator):
        def __exit__(self, *exc_info) -> None:
            seen.extend(self.requests)
            super().__exit__(*exc_info)

    monkeypatch.setattr(emulator, "Emulator", Recording)
    with Hostile() as proxy:
        for name, value in (("REPLICATE_API_TOKEN", LONG_TOKEN), ("HTTP_PROXY", proxy.url),
                            ("HTTPS_PROXY", proxy.url), ("REPLICATE_BASE_URL", "unused")):
            monkeypatch.setenv(name, value)  # so that the CLI's own changes are undone after the test
        assert cli.main(["--emulator", "Hi"]) == 0
    assert seen and {r.headers.get("Authorization") for r in seen} == {"Bearer emulator"}
    assert proxy.requests == []
    assert LONG_TOKEN not in capsys.readouterr().out


# -- no message shows the token ----------------------------------------------------------------------------


async def test_a_token_echoed_past_the_cut_is_redacted_before_the_cut():
    detail = "x" * 290 + " you sent " + LONG_TOKEN  # the 300-character cut falls inside the token
    problem = json.dumps({"title": "Invalid input", "detail": detail, "status": 422})
    with Hostile(create=json_answer(problem, status=422)) as server, pytest.raises(ResponseError) as caught:
        await collect(server.url, api_key=LONG_TOKEN)
    message = str(caught.value)
    assert caught.value.status == 422 and "[token]" not in message  # cut before the token's place
    assert no_piece_of(LONG_TOKEN, message) and no_piece_of(LONG_TOKEN, caught.value.detail or "")


async def test_an_answer_without_a_prediction_id_is_redacted_before_the_cut():
    echo = json_answer({"echo": "y" * 150 + LONG_TOKEN, "urls": {}})
    with Hostile(create=echo) as server, pytest.raises(ResponseError, match="without a valid prediction id") as caught:
        await collect(server.url, api_key=LONG_TOKEN)
    assert no_piece_of(LONG_TOKEN, str(caught.value))


async def test_a_model_error_echoing_the_token_is_redacted():
    async def failing(server: Hostile, request: web.Request) -> web.StreamResponse:
        response = await event_stream(request)
        data = json.dumps({"detail": "z" * 280 + " token " + LONG_TOKEN})
        await server.write("stream", response, f"event: error\ndata: {data}\n\n".encode())
        return response

    with Hostile(stream=failing) as server, pytest.raises(ModelError) as caught:
        await collect(server.url, api_key=LONG_TOKEN)
    assert no_piece_of(LONG_TOKEN, str(caught.value))


async def test_a_rejected_token_is_never_shown(env_emu):
    with pytest.raises(MissingAuthError) as caught:
        await collect(env_emu.base_url, LLAMA, api_key=LONG_TOKEN)
    assert no_piece_of(LONG_TOKEN, str(caught.value) + repr(caught.value))


def test_xmode_verbose_shows_one_line_and_no_headers():
    async def create(server: Hostile, request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": PREDICTION_ID, "urls": {"stream": 5}}, status=201)

    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    with Hostile(create=create) as server:
        shell.user_ns.update(collect=collect, url=server.url, token=LONG_TOKEN, asyncio=asyncio)
        shell.run_line_magic("xmode", "Verbose")
        try:
            with capture() as out:
                result = shell.run_cell("asyncio.run(collect(url, api_key=token))")
        finally:
            shell.run_line_magic("xmode", "Context")
    assert isinstance(result.error_in_exec, ResponseError)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines == [f"ResponseError: {result.error_in_exec}"]
    assert no_piece_of(LONG_TOKEN, out.getvalue()) and "Authorization" not in out.getvalue()
    assert server.cancels == [PREDICTION_ID]


def capture():
    from contextlib import redirect_stdout
    from io import StringIO

    class Captured(StringIO):
        def __enter__(self):
            self._redirect = redirect_stdout(self)
            self._redirect.__enter__()
            return self

        def __exit__(self, *exc_info):
            self._redirect.__exit__(*exc_info)

    return Captured()
