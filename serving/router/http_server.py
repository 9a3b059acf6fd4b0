"""The proxy's client side: an HTTP/1.1 server on asyncio protocols and httptools (llhttp).

It does what a proxy in front of JSON prediction servers needs and no more: keep-alive, pipelined
requests answered in order, Content-Length and chunked request bodies (read whole, within
`max_body_bytes`), `Expect: 100-continue`, a bound on the header block, an idle timeout that also bounds
how long a request may take to arrive, and a graceful stop. Protocol upgrades are ignored. Each request
goes to one `Handler` coroutine, which returns a whole `Response`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools
import orjson

from serving.router.constants import (
    CLIENT_IDLE_SECONDS,
    CLIENT_IDLE_SWEEP_SECONDS,
    DRAIN_IDLE_SECONDS,
    MAX_HEADER_BYTES,
    MAX_PIPELINED_REQUESTS,
)
from serving.router.listener import open_listener

__all__ = ["Handler", "HttpServer", "Request", "Response", "json_response"]

logger = logging.getLogger("mct.router")

REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
# By (keep the connection, HTTP/1.0 client): HTTP/1.1 keeps connections unless told otherwise, 1.0 the reverse.
CONNECTION_HEADERS = {
    (True, False): b"",
    (True, True): b"connection: keep-alive\r\n",
    (False, False): b"connection: close\r\n",
    (False, True): b"connection: close\r\n",
}


class Request:
    """One client request, read whole. Header names are lower-cased."""

    __slots__ = ("body", "client", "headers", "http_10", "keep_alive", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        client: str,
        keep_alive: bool,
        http_10: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.client = client
        self.keep_alive = keep_alive
        self.http_10 = http_10  # an HTTP/1.0 client keeps the connection only if told so

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response:
    """A whole response; `headers` are ready-made `name: value\\r\\n` lines without Content-Length.

    `length` overrides the Content-Length sent (an answer to HEAD states the length of a body it omits).
    """

    __slots__ = ("body", "headers", "length", "status")

    def __init__(self, status: int, headers: bytes = b"", body: bytes = b"", length: int | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.length = length


def json_response(status: int, document: Any, headers: bytes = b"") -> Response:
    """A JSON response from the router itself (it has a clock, so it sends a Date)."""
    date = formatdate(time.time(), usegmt=True).encode()
    return Response(
        status, b"content-type: application/json\r\ndate: %s\r\n%s" % (date, headers), orjson.dumps(document)
    )


Handler = Callable[[Request], Awaitable[Response]]


class _Rejected(Exception):
    """A request refused while it is parsed (too large): answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the handler in order, writes the answers."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_closing",
        "_header_bytes",
        "_headers",
        "_parser",
        "_queue",
        "_reading_paused",
        "_server",
        "_url",
        "_worker",
        "_writable",
        "client",
        "idle_since",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: deque[Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closing = False
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.idle_since: float | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        self.idle_since = self._server.loop.time()
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._queue.clear()
        if self._worker is not None:
            # The client left: stop working for it (the tries in flight are abandoned).
            self._worker.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            rejected = exc.__context__
            if isinstance(rejected, _Rejected):
                self._reject(rejected.status, str(rejected))
            else:
                logger.error("router error while parsing a request", exc_info=rejected)
                self._reject(500, "internal router error (see the router's log)")
        except httptools.HttpParserUpgrade:
            # The router does not switch protocols; a server may ignore an Upgrade (RFC 9110 7.8), so the
            # request is answered as it is, and the connection then closed (the parser has stopped).
            if self._worker is None:
                self._reject(400, "protocol upgrades are not supported by the router")
            else:
                self._closing = True
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._writable = self._server.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._server.max_body_bytes:
                raise _Rejected(413, f"the request body is larger than {self._server.max_body_bytes} bytes")
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > self._server.max_body_bytes:  # a chunked body states no length up front
            raise _Rejected(413, f"the request body is larger than {self._server.max_body_bytes} bytes")

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        request = Request(
            parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body) if self._body else b"",
            self.client,
            keep_alive,
            keep_alive and parser.get_http_version() == "1.0",
        )
        self._url = b""
        self._headers = []
        self._body = []
        self._body_bytes = 0
        self._header_bytes = 0
        self.idle_since = None
        self._queue.append(request)
        if len(self._queue) >= MAX_PIPELINED_REQUESTS and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        if self._worker is None:
            self._worker = self._server.loop.create_task(self._serve())

    # serving

    async def _serve(self) -> None:
        queue = self._queue
        handler = self._server.handler
        try:
            while queue:
                request = queue.popleft()
                try:
                    response = await handler(request)
                except Exception:
                    logger.exception("router error on %s %s", request.method.decode(), request.target.decode())
                    response = json_response(500, {"error": "internal router error (see the router's log)"})
                keep_alive = request.keep_alive and not self._closing
                self._write(request, response, keep_alive)
                if not keep_alive:
                    self._close()
                    return
                if self._writable is not None:
                    await self._writable
                if self._reading_paused and len(queue) < MAX_PIPELINED_REQUESTS // 2 and self.transport is not None:
                    self.transport.resume_reading()
                    self._reading_paused = False
        finally:
            self._worker = None
        self.idle_since = self._server.loop.time()

    def _write(self, request: Request, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = response.body
        head = b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\n%s\r\n" % (
            response.status,
            REASONS.get(response.status, b"Unknown"),
            response.headers,
            len(body) if response.length is None else response.length,
            CONNECTION_HEADERS[keep_alive, request.http_10],
        )
        if request.method == b"HEAD":
            transport.write(head)
        elif len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Rejected(431, f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes")

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or accepted, then close: the stream is out of step.

        With earlier pipelined requests still being answered, an answer now would come out of order:
        the connection just closes.
        """
        self._queue.clear()
        if self._worker is None and self.transport is not None and not self.transport.is_closing():
            response = json_response(status, {"error": message})
            self._write(Request(b"", b"", [], b"", self.client, False), response, keep_alive=False)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def drain(self) -> None:
        """Close after the next answer; an idle connection stays open for a request that may be on its way."""
        self._closing = True

    def shut(self) -> None:
        """Graceful stop: close at once if idle, else after the answer being prepared."""
        self._closing = True
        if self._worker is None:
            self._close()


class HttpServer:
    """Listens on a TCP address and serves every connection with `handler`."""

    def __init__(self, handler: Handler, max_body_bytes: int) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.loop = asyncio.get_running_loop()
        self.connections: set[_ClientConnection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen; the port actually bound (useful with port 0). See `open_listener` for `reuse_port`."""
        sock = open_listener(host, port, reuse_port)
        self._server = await self.loop.create_server(lambda: _ClientConnection(self), sock=sock)
        self._sweeper = self.loop.create_task(self._sweep_idle())
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace_seconds: float) -> None:
        """Stop listening and drain: for up to `grace_seconds`, answer what comes, then drop the rest.

        Each connection closes after its next answer (which says `connection: close`), or once it has been
        idle for `DRAIN_IDLE_SECONDS`: closing a connection the moment a client reuses it loses that
        request, and a client that has not used one for that long is unlikely to be using it right now.
        """
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in self.connections:
            connection.drain()
        deadline = self.loop.time() + grace_seconds
        while self.connections and self.loop.time() < deadline:
            limit = self.loop.time() - DRAIN_IDLE_SECONDS
            for connection in list(self.connections):
                if connection.idle_since is not None and connection.idle_since < limit:
                    connection.shut()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(CLIENT_IDLE_SWEEP_SECONDS)
            limit = self.loop.time() - CLIENT_IDLE_SECONDS
            for connection in list(self.connections):
                if connection.idle_since is not None and connection.idle_since < limit:
                    connection.shut()
