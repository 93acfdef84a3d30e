"""A small recording HTTP forward proxy on 127.0.0.1, for proxy tests over real sockets."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .server_thread import ServerThread


@dataclass
class ForwardProxy(ServerThread):
    seen: list[str] = field(default_factory=list)  # "METHOD absolute-url" per request
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, ready: threading.Event) -> None:
        self._handlers: set[asyncio.Task[None]] = set()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stop.wait()
        server.close()
        await server.wait_closed()
        # Python < 3.12 does not wait for open connections: finish them before the loop closes,
        # or their sockets are reported unclosed.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, headers = head.partition(b"\r\n")
            method, target, version = request_line.decode().split(" ")
            self.seen.append(f"{method} {target}")
            parts = urlsplit(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(parts.hostname, parts.port)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [h for h in headers.split(b"\r\n") if h and not h.lower().startswith((b"connection:", b"proxy-"))]
            upstream_writer.write(
                f"{method} {path} {version}\r\n".encode() + b"\r\n".join(kept) + b"\r\nConnection: close\r\n\r\n"
            )
            upload = asyncio.ensure_future(_pipe(reader, upstream_writer))
            await _pipe(upstream_reader, writer)  # the response ends the exchange (Connection: close)
            upload.cancel()
            await asyncio.gather(upload, return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            for stream in (upstream_writer, writer):
                if stream is not None:
                    stream.close()
                    try:
                        await stream.wait_closed()
                    except (ConnectionError, OSError):
                        pass


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass
