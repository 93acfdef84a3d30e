"""The file host (replicate.delivery on the real service): ``GET /<path>`` serves output files.

It needs no token and never checks one; it counts the requests that carry one (a client must
not send its API token to a file host). Headers as replicate.delivery sent them for a PNG in
replicate-python tests/cassettes/file-prediction.yaml: Content-Type, Content-Length, ETag (the
quoted MD5), Last-Modified, ``Cache-Control: public,max-age=3600``,
``access-control-allow-origin: *``. A file past its lifetime is gone: 404 with the body Google
Cloud Storage gives a missing object (the recorded x-goog-* headers show GCS behind it;
the body itself is not recorded).
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from aiohttp import web

from .files import StoredFile
from .limits import MAX_BODY
from .state import STATE_KEY, EmulatorState, recording_middleware

__all__ = ["make_file_app"]

_NO_SUCH_KEY = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
                "<Message>The specified key does not exist.</Message></Error>")
_CHUNK = 64 * 1024
_STALL_POLL = 0.05  # seconds between looks at whether the emulator is closing


def _headers(stored: StoredFile) -> dict[str, str]:
    return {
        "Content-Type": stored.content_type,
        "Content-Length": str(stored.size),
        "ETag": f'"{stored.md5}"',
        "Last-Modified": formatdate(stored.created_ns / 1e9, usegmt=True),
        "Cache-Control": "public,max-age=3600",
        "access-control-allow-origin": "*",
    }


async def serve_file(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE_KEY]
    if state.faults.take_counter("file_error"):
        return web.Response(status=503, text="Service Unavailable (emulated)", content_type="text/plain")
    stored = state.outputs.get(request.path)
    if stored is None:
        return web.Response(status=404, text=_NO_SUCH_KEY, content_type="application/xml")
    stored.downloads += 1
    faulty = stored.downloads == 1 or stored.every_download
    cut = min((n for n in (stored.drop_after, stored.stall_after) if n is not None and faulty), default=None)
    response = web.StreamResponse(headers=_headers(stored))
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    body = stored.data if cut is None else stored.data[:cut]
    store = state.outputs
    store.in_flight += 1  # only this loop changes it: no lock needed
    store.peak_in_flight = max(store.peak_in_flight, store.in_flight)
    try:
        if stored.delay > 0:
            await asyncio.sleep(stored.delay)  # a slow host: headers sent, the body held back
        for start in range(0, len(body), _CHUNK):
            await response.write(body[start:start + _CHUNK])
        if cut is None:
            await response.write_eof()
        elif cut == stored.stall_after:
            while not state.closing:  # silent until the client gives up (or we close)
                await asyncio.sleep(_STALL_POLL)
        elif request.transport is not None:
            request.transport.close()  # fewer bytes than Content-Length said: a broken download
    except ConnectionResetError:
        pass
    finally:
        store.in_flight -= 1
    return response


def make_file_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware("files")], client_max_size=MAX_BODY)
    app[STATE_KEY] = state
    app.router.add_get("/{path:.+}", serve_file)
    return app


