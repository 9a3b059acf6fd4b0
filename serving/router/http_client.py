"""The proxy's upstream side: HTTP/1.1 keep-alive connection pools on asyncio protocols and httptools.

httptools is llhttp, Node.js's HTTP parser (uvicorn parses with it too); the framing around it is small
because the router only needs one exchange at a time per connection, whole bodies, and a deadline per
try. Measured on 2 cores against a fast backend, this client plus `http_server` proxies about three times
as many requests per second as aiohttp's server and client (the figures are in the package docstring).

Every failure is an `UpstreamError` whose `sent` tells whether the backend may have received the request
(a failed connect: no). A pooled connection that the backend closed while idle is retried once on a new
connection, transparently: that is keep-alive housekeeping, not a backend failure.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import httptools

from serving.router.constants import MAX_RESPONSE_BYTES, UPSTREAM_IDLE_SECONDS, UPSTREAM_MAX_IDLE_CONNECTIONS

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectionLost",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
]

# Methods whose requests carry a body (and so a Content-Length, even when empty).
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class UpstreamError(Exception):
    """A try that got no usable answer from the backend."""

    sent = True  # whether the backend may have received the request
    outcome = "error"  # the metrics label


class ConnectFailed(UpstreamError):
    """No connection (refused, unreachable, TLS failure or connect timeout): the request was not sent."""

    sent = False
    outcome = "connect_error"


class UpstreamTimeout(UpstreamError):
    """The backend did not answer within the try's deadline."""

    outcome = "timeout"


class ConnectionLost(UpstreamError):
    """The backend closed or reset the connection before its answer was complete."""

    outcome = "reset"


class BadResponse(UpstreamError):
    """The backend's answer was not valid HTTP/1.1, or too large to buffer."""

    outcome = "bad_response"


class _StaleConnection(Exception):
    """A reused connection closed before a single byte of the answer: the backend had dropped it idle."""


@dataclass(slots=True)
class UpstreamResponse:
    """A backend's answer: status, headers (names lower-cased, as received) and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time, parsed by llhttp."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_head_only",
        "_headers",
        "_parser",
        "_pool",
        "_received",
        "_timer",
        "_until_eof",
        "_waiter",
        "closed",
        "idle_since",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._received = False
        self._head_only = False
        self._until_eof = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._until_eof:  # a body without length or chunks ends with the connection
            self._complete(reusable=False)
        elif not self._received and self.reused:
            self._fail(_StaleConnection())
        else:
            reason = f": {exc}" if exc else ""
            self._fail(ConnectionLost(f"the backend closed the connection before answering{reason}"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: a confused or hostile backend
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ if isinstance(exc.__context__, UpstreamError) else BadResponse(str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"the backend's answer is not valid HTTP/1.1: {exc}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if self._head_only and status >= 200:
            # An answer to HEAD has no body whatever its Content-Length says; llhttp would wait for one.
            self._complete(reusable=False)
            return
        framed = any(name in (b"content-length", b"transfer-encoding") for name, _ in self._headers)
        self._until_eof = not framed and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_RESPONSE_BYTES:
            raise BadResponse(f"the backend's answer is larger than {MAX_RESPONSE_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # an interim answer (100 Continue): the real one follows
            self._headers = []
            return
        self._complete(reusable=self._parser.should_keep_alive())

    # the exchange

    def send(self, data: bytes, deadline: float, head_only: bool) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the future gets the answer, or an `UpstreamError` (a timeout at `deadline`)."""
        loop = self._pool.loop
        self._waiter = waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._on_timeout)
        self._headers = []
        self._body = []
        self._body_bytes = 0
        self._received = False
        self._until_eof = False
        self._head_only = head_only
        assert self.transport is not None
        self.transport.write(data)
        return waiter

    def abort(self) -> None:
        """Drop the connection at once (an answer may be half read: it cannot be reused)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout("the backend did not answer in time"))

    def _complete(self, reusable: bool) -> None:
        waiter = self._end()
        if waiter is None:  # the try already ended (timeout, cancellation): the connection is being dropped
            return
        waiter.set_result(UpstreamResponse(self._parser.get_status_code(), self._headers, b"".join(self._body)))
        self._body = []
        if reusable and not self.closed:
            self._pool.release(self)
        else:
            self.abort()

    def _fail(self, error: BaseException) -> None:
        waiter = self._end()
        if not self.closed:  # an answer may be half read: the connection cannot be reused
            self.abort()
        if waiter is not None:
            waiter.set_exception(error)

    def _end(self) -> asyncio.Future[UpstreamResponse] | None:
        """Detach the exchange in progress and stop its timer; its waiter, unless nobody awaits it any more."""
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter if waiter is not None and not waiter.done() else None


class UpstreamPool:
    """Keep-alive connections to one backend, reused most recently used first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        base_path: str = "",
        max_idle: int = UPSTREAM_MAX_IDLE_CONNECTIONS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._ssl = ssl.create_default_context() if tls else None
        default_port = 443 if tls else 80
        self._host_header = (host if port == default_port else self.address).encode("idna")
        self._base_path = base_path.encode()
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self, method: bytes, target: bytes, headers: bytes, body: bytes, timeout_seconds: float
    ) -> UpstreamResponse:
        """One exchange within `timeout_seconds`. `headers` are ready-made `name: value\\r\\n` lines
        without Host, Content-Length or hop-by-hop headers; `target` is the path and query."""
        loop = self.loop
        deadline = loop.time() + timeout_seconds
        length = b"content-length: %d\r\n" % len(body) if body or method in BODY_METHODS else b""
        data = (
            b"%s %s%s HTTP/1.1\r\nhost: %s\r\n%s%s\r\n"
            % (method, self._base_path, target, self._host_header, headers, length)
            + body
        )
        head_only = method == b"HEAD"
        connection = self._acquire(loop.time())
        if connection is None:
            connection = await self._connect(deadline)
        try:
            return await self._exchange(connection, data, deadline, head_only)
        except _StaleConnection:
            connection = await self._connect(deadline)
            return await self._exchange(connection, data, deadline, head_only)

    def release(self, connection: _Connection) -> None:
        """Take back a connection whose exchange completed and that may be reused."""
        if self._closed or len(self._idle) >= self._max_idle:
            connection.abort()
            return
        connection.idle_since = self.loop.time()
        self._idle.append(connection)

    def close(self) -> None:
        """Close the idle connections; the busy ones close when their exchange ends."""
        self._closed = True
        for connection in self._idle:
            connection.abort()
        self._idle = []

    def _acquire(self, now: float) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if now - connection.idle_since > UPSTREAM_IDLE_SECONDS:
                connection.abort()
                continue
            connection.reused = True
            return connection
        return None

    async def _connect(self, deadline: float) -> _Connection:
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {self.address} timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.address}: {exc.strerror or exc}") from None
        return connection

    @staticmethod
    async def _exchange(connection: _Connection, data: bytes, deadline: float, head_only: bool) -> UpstreamResponse:
        waiter = connection.send(data, deadline, head_only)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Nobody will read the answer (the client left, or a hedge won): the connection is unusable.
            connection.abort()
            raise
