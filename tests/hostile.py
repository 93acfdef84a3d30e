"""Small hostile servers on 127.0.0.1: what the emulator does not do wrong on purpose.

``Hostile`` is a minimal Replicate (schema, create, get, cancel, stream) on its own loop
and thread, whose answers a test replaces one route at a time. It records every request
it sees, the cancels, and how many body bytes each route managed to write before the
client stopped reading. It also answers requests sent to it as a proxy (absolute-form
targets such as ``GET http://stream.replicate.com/...``), so a test can see what a client
would send to another host without that host existing.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .server_thread import ServerThread

if TYPE_CHECKING:
    from typing_extensions import Self

Handler = Callable[["Hostile", web.Request], Awaitable[web.StreamResponse]]
PREDICTION_ID = "hostile0prediction0id"


@dataclass(frozen=True)
class Seen:
    method: str
    host: str  # the Host header: which server the client meant
    path: str
    headers: dict[str, str]
    proxied: bool  # sent to us as to a proxy (an absolute-form target)


class Hostile(ServerThread):
    """Routes: ``schema``, ``create``, ``get``, ``cancel``, ``stream``; each ``async (server, request)``."""

    def __init__(self, **routes: Handler) -> None:
        unknown = set(routes) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown routes: {unknown}")
        self._routes = {**_DEFAULTS, **routes}
        self.requests: list[Seen] = []
        self.cancels: list[str] = []
        self.written: dict[str, int] = {}
        self.port = 0

    # -- what a test reads ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, route_path: str) -> list[Seen]:
        return [r for r in self.requests if r.path.startswith(route_path)]

    def prediction(self, prediction_id: str = PREDICTION_ID, **changes: Any) -> dict[str, Any]:
        """A well-formed prediction whose URLs point here."""
        api = f"{self.url}/v1/predictions/{prediction_id}"
        body: dict[str, Any] = {
            "id": prediction_id, "status": "starting", "output": None, "error": None,
            "urls": {"get": api, "cancel": f"{api}/cancel", "stream": f"{self.url}/v1/streams/{prediction_id}",
                     "web": f"https://replicate.com/p/{prediction_id}"},
        }
        body.update(changes)
        return body

    async def write(self, route: str, response: web.StreamResponse, data: bytes) -> bool:
        """Write and count; False once the client went away."""
        try:
            await response.write(data)
        except (ConnectionError, RuntimeError):
            return False
        self.written[route] = self.written.get(route, 0) + len(data)
        return True

    # -- running -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return super().__enter__()  # type: ignore[no-any-return]

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(middlewares=[self._record])
        router = app.router
        router.add_get("/v1/models/{owner}/{name}", self._route("schema"))
        router.add_post("/v1/models/{owner}/{name}/predictions", self._route("create"))
        router.add_get("/v1/predictions/{id}", self._route("get"))
        router.add_post("/v1/predictions/{id}/cancel", self._route("cancel"))
        router.add_get("/v1/streams/{id}", self._route("stream"))
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _route(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._routes[name](self, request)

        return handle

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]) -> Any:
        proxied = request.raw_path.startswith(("http://", "https://"))
        self.requests.append(Seen(request.method, request.host, request.path, dict(request.headers), proxied))
        return await handler(request)


# -- the default routes: a minimal, well-behaved Replicate ----------------------------------------


async def no_schema(server: Hostile, request: web.Request) -> web.StreamResponse:
    return web.json_response({"latest_version": None})  # the client falls back to gpt4free's keys


async def created(server: Hostile, request: web.Request) -> web.StreamResponse:
    return web.json_response(server.prediction(), status=201)


async def succeeded(server: Hostile, request: web.Request) -> web.StreamResponse:
    return web.json_response(server.prediction(request.match_info["id"], status="succeeded", output=["Hi"]))


async def cancelled(server: Hostile, request: web.Request) -> web.StreamResponse:
    server.cancels.append(request.match_info["id"])
    return web.json_response(server.prediction(request.match_info["id"], status="canceled"))


async def one_token(server: Hostile, request: web.Request) -> web.StreamResponse:
    response = await event_stream(request)
    await server.write("stream", response, b"event: output\ndata: Hi\n\nevent: done\ndata: {}\n\n")
    return response


_DEFAULTS: dict[str, Handler] = {
    "schema": no_schema, "create": created, "get": succeeded, "cancel": cancelled, "stream": one_token,
}


# -- building blocks for hostile routes ------------------------------------------------------------


async def event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def json_answer(data: Any, status: int = 201) -> Handler:
    """A route that answers ``data`` (any JSON text when ``data`` is a str)."""

    async def answer(server: Hostile, request: web.Request) -> web.StreamResponse:
        text = data if isinstance(data, str) else json.dumps(data)
        return web.Response(text=text, status=status, content_type="application/json")

    return answer


def endless(route: str, first: bytes, repeat: bytes, *, total: int, content_type: str) -> Handler:
    """A route that writes ``first``, then ``repeat`` until ``total`` bytes or the client leaves."""

    async def answer(server: Hostile, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        if not await server.write(route, response, first):
            return response
        while server.written.get(route, 0) < total:
            if not await server.write(route, response, repeat):
                break
        return response

    return answer


def gzip_bomb(size: int) -> bytes:
    """A gzip body that inflates to a JSON string of about ``size`` bytes (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"a" * (1024 * 1024)
    parts = [packer.compress(b'{"id": "')]
    parts += [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.compress(b'"}') + packer.flush()


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth
