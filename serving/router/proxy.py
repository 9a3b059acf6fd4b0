"""The hot path: forward a client request to a backend, retry elsewhere when it fails, answer the client.

Per request: pick a backend (`BackendSet.pick`: tiers, health, panic, policy), send the request with the
per-try timeout, and judge the outcome:

- an answer with a status not in `retry.statuses` (2xx, 3xx, 4xx, 501, ...) goes to the client as is,
  with `X-Routed-To: NAME`; a 4xx is never retried;
- a connection error, reset, timeout or retryable 5xx (500, 502, 503, 504) counts towards the backend's
  ejection and is retried on a backend not tried yet, up to `max_retries` times, as long as the retry
  budget allows (a failed connect sent nothing and needs no budget);
- with hedging on, a try that has not answered after `hedge_after_seconds` gets a twin on another
  backend, and the first good answer wins.

When every try failed, the client gets the last backend answer if there was one (a 5xx, with
`X-Routed-To`), otherwise a 503 whose JSON says what was tried and what to do. Bodies and headers pass
through both ways except hop-by-hop headers; requests and answers are buffered whole, since a retry
must be able to resend the request and must not have started the client's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.router.backends import Backend, BackendSet
from serving.router.config import RetryConfig
from serving.router.constants import ROUTED_TO_HEADER
from serving.router.health import HealthTracker
from serving.router.http_client import UpstreamError, UpstreamPool, UpstreamResponse
from serving.router.http_server import Request, Response, json_response
from serving.router.metrics import BackendSeries, RouterMetrics
from serving.router.retry import RetryBudget

__all__ = ["HOP_BY_HOP", "Proxy", "RoutingTable", "Upstream"]

logger = logging.getLogger("mct.router")

# Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The proxy writes these itself: Host and Content-Length for each try, X-Forwarded-For extended; an
# Expect was answered by the router, which has the whole body.
REQUEST_OWN = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-forwarded-for"}
RESPONSE_OWN = HOP_BY_HOP | {b"content-length", ROUTED_TO_HEADER}
STATUS_HINT = "GET /router/status (with the admin token) shows each backend's state and last error"


@dataclass(slots=True)
class Upstream:
    """What the proxy needs to reach one backend: its connection pool and its metrics."""

    pool: UpstreamPool
    series: BackendSeries


@dataclass
class RoutingTable:
    """One generation of routing state; a configuration reload swaps in a new one as a whole."""

    backends: BackendSet
    upstreams: dict[Backend, Upstream]
    tracker: HealthTracker
    retry: RetryConfig
    budget: RetryBudget


@dataclass
class _Attempts:
    """The tries of one request so far, and the verdict on the next."""

    tried: list[Backend] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    last_answer: tuple[Backend, UpstreamResponse] | None = None
    budget_spent: bool = False

    def note_failure(self, backend: Backend, response: UpstreamResponse | None) -> None:
        """Remember a failed try: its answer (a retryable 5xx) or the error the backend last had."""
        if response is not None:
            self.last_answer = (backend, response)
            error = f"answered {response.status}"
        else:
            error = backend.last_error or "failed"
        self.failures.append({"backend": backend.name, "error": error})


class Proxy:
    """Forwards requests through the current `RoutingTable` (`table` is replaced on reload)."""

    def __init__(self, table: RoutingTable, metrics: RouterMetrics, clock: Callable[[], float]) -> None:
        self.table = table
        self.metrics = metrics
        self._clock = clock

    async def forward(self, request: Request) -> Response:
        """Answer one client request from a backend, retrying on others as the configuration allows."""
        table = self.table
        table.budget.record_request(self._clock())
        headers = request_headers(request)
        if table.retry.hedge_after_seconds is None:
            response = await self._forward_in_turn(table, request, headers)
        else:
            response = await self._forward_hedged(table, request, headers, table.retry.hedge_after_seconds)
        self.metrics.answered(response.status)
        return response

    async def _forward_in_turn(self, table: RoutingTable, request: Request, headers: bytes) -> Response:
        attempts = _Attempts()
        backend = self._next(table, attempts)
        while backend is not None:
            response, error = await self._try(table, backend, request, headers)
            if response is not None and response.status not in table.retry.statuses:
                return client_response(backend, response, request)
            attempts.note_failure(backend, response)
            backend = self._next(table, attempts, backend, error)
        return self._give_up(attempts, request)

    async def _forward_hedged(
        self, table: RoutingTable, request: Request, headers: bytes, hedge_seconds: float
    ) -> Response:
        attempts = _Attempts()
        running: dict[asyncio.Task[tuple[UpstreamResponse | None, UpstreamError | None]], Backend] = {}
        loop = asyncio.get_running_loop()

        def launch(failed: Backend | None = None, error: UpstreamError | None = None) -> bool:
            backend = self._next(table, attempts, failed, error)
            if backend is not None:
                running[loop.create_task(self._try(table, backend, request, headers))] = backend
            return backend is not None

        hedging = launch()
        try:
            while running:
                done, _ = await asyncio.wait(
                    running, timeout=hedge_seconds if hedging else None, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the tries in flight are slow: a twin on another backend, as a retry would be
                    hedging = launch(failed=next(iter(running.values())))
                    continue
                for task in done:
                    backend = running.pop(task)
                    response, error = task.result()
                    if response is not None and response.status not in table.retry.statuses:
                        return client_response(backend, response, request)
                    attempts.note_failure(backend, response)
                    if not running:
                        hedging = launch(backend, error)
        finally:
            for task in running:
                task.cancel()
        return self._give_up(attempts, request)

    def _next(
        self,
        table: RoutingTable,
        attempts: _Attempts,
        failed: Backend | None = None,
        error: UpstreamError | None = None,
    ) -> Backend | None:
        """The backend for the next try (recorded in `attempts`), or None when none is left or allowed.

        After `failed` failed (or, hedging, is slow), another try needs room under `max_retries` and a
        backend not tried yet, and spends retry budget unless `error` says nothing was sent.
        """
        if failed is not None and len(attempts.tried) > table.retry.max_retries:
            return None
        backend, panic = table.backends.pick(self._clock(), attempts.tried)
        if backend is None:
            return None
        if failed is not None:
            if (error is None or error.sent) and not table.budget.try_spend(self._clock()):
                attempts.budget_spent = True
                self.metrics.budget_exhausted.inc()
                return None
            table.upstreams[failed].series.retries.inc()
        attempts.tried.append(backend)
        if panic:
            self.metrics.panic_tries.inc()
        return backend

    async def _try(
        self, table: RoutingTable, backend: Backend, request: Request, headers: bytes
    ) -> tuple[UpstreamResponse | None, UpstreamError | None]:
        """One try on one backend, with its bookkeeping: load, latency, health, metrics."""
        upstream = table.upstreams[backend]
        clock = self._clock
        started = clock()
        backend.in_flight += 1
        try:
            response = await upstream.pool.request(
                request.method, request.target, headers, request.body, table.retry.per_try_timeout_seconds
            )
        except UpstreamError as error:
            now = clock()
            upstream.series.failed(error.outcome)
            if error.sent:  # a failed connect took no time worth learning from
                backend.latency.observe(now - started, now)
            self._failed(table, backend, now, str(error))
            return None, error
        finally:
            backend.in_flight -= 1
        now = clock()
        upstream.series.answered(response.status, now - started)
        backend.latency.observe(now - started, now)
        if response.status >= 500:
            self._failed(table, backend, now, f"answered {response.status}")
        else:
            table.tracker.record_success(backend)
        return response, None

    def _failed(self, table: RoutingTable, backend: Backend, now: float, reason: str) -> None:
        backend.last_error = reason
        seconds = table.tracker.record_failure(backend, now, table.backends.backends)
        if seconds is not None:
            table.upstreams[backend].series.ejections.inc()
            logger.warning(
                "backend %s ejected for %.1f s after %d failed tries in a row (last: %s)",
                backend.name,
                seconds,
                backend.health.failures,
                reason,
            )

    @staticmethod
    def _give_up(attempts: _Attempts, request: Request) -> Response:
        if attempts.last_answer is not None:
            return client_response(*attempts.last_answer, request)
        return no_backend_response(attempts)


def request_headers(request: Request) -> bytes:
    """The client's headers as forwarded: hop-by-hop ones (and those `Connection` names) removed,
    the client's address appended to `X-Forwarded-For`."""
    dropped = REQUEST_OWN
    connection = request.header(b"connection")
    if connection is not None:
        dropped = dropped | {token.strip().lower() for token in connection.split(b",")}
    lines = [name + b": " + value + b"\r\n" for name, value in request.headers if name not in dropped]
    forwarded = request.header(b"x-forwarded-for")
    client = request.client.encode()
    lines.append(b"x-forwarded-for: " + (forwarded + b", " + client if forwarded else client) + b"\r\n")
    return b"".join(lines)


def client_response(backend: Backend, response: UpstreamResponse, request: Request) -> Response:
    """A backend's answer as the client gets it: its own headers less hop-by-hop ones, plus X-Routed-To."""
    dropped = RESPONSE_OWN
    length: int | None = None
    lines = []
    for name, value in response.headers:
        if name == b"connection":
            dropped = dropped | {token.strip().lower() for token in value.split(b",")}
        elif name == b"content-length" and request.method == b"HEAD" and value.isdigit():
            length = int(value)
    for name, value in response.headers:
        if name not in dropped:
            lines.append(name + b": " + value + b"\r\n")
    lines.append(ROUTED_TO_HEADER + b": " + backend.routed_to + b"\r\n")
    return Response(response.status, b"".join(lines), response.body, length)


def no_backend_response(attempts: _Attempts) -> Response:
    """The 503 for a request no backend answered: what was tried, and where to look next."""
    document: dict[str, Any]
    if not attempts.tried:
        document = {
            "error": "no backend to route to: every backend is drained",
            "hint": "undrain one with POST /router/backends/NAME/undrain; " + STATUS_HINT,
        }
    else:
        reason = "the retry budget is spent (too many failures lately)" if attempts.budget_spent else "all failed"
        document = {
            "error": f"no healthy backend answered: {len(attempts.tried)} tried, {reason}",
            "tried": attempts.failures,
            "hint": STATUS_HINT + "; check each model server's /v2/health/ready",
        }
    return json_response(503, document, b"retry-after: 1\r\n")
