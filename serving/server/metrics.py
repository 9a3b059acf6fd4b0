"""Prometheus metrics of one server, and the ASGI middleware that times every request.

Each server has its own registry (not the process-wide default), so that apps created side by side, as
in tests, never share or collide on series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServerMetrics"]

# Single-row predictions take about a millisecond and big batches tens of milliseconds; the drill mode's
# injected delays and a slow store reach seconds. These buckets resolve all three.
LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Requests that matched no route are counted under one label, so that scanning random paths cannot
# create unbounded series.
UNMATCHED_ROUTE = "unmatched"

# `*_created` timestamps double the series and no dashboard of ours reads them.
disable_created_metrics()


class ServerMetrics:
    """Every series the server exposes on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mct_server_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mct_server_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.predicted_rows = Counter(
            "mct_server_predicted_rows", "Rows predicted, by protocol.", ["protocol"], registry=self.registry
        )
        self.model_version = Gauge(
            "mct_server_model_version", "Version of the model being served (0: none loaded).", registry=self.registry
        )
        self.model_ready = Gauge(
            "mct_server_model_ready", "1 when a verified model is loaded and served, else 0.", registry=self.registry
        )
        self.reloads = Counter(
            "mct_server_reloads", "Versions loaded and swapped in (the first load included).", registry=self.registry
        )
        self.reload_failures = Counter(
            "mct_server_reload_failures",
            "Versions that could not be loaded: `rejected` (failed verification or loading) or `storage`.",
            ["reason"],
            registry=self.registry,
        )
        self.poll_failures = Counter(
            "mct_server_poll_failures", "Polls of the pointer that could not read the store.", registry=self.registry
        )
        for reason in ("rejected", "storage"):
            self.reload_failures.labels(reason=reason)
        # Resolving label values is the costly part of an observation: keep the children per series.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            labels = {"route": route, "method": method, "status": str(status)}
            series = self._series[key] = (self.requests.labels(**labels), self.latency.labels(**labels))
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: times each HTTP request and labels it with its route's template and status.

    It also stamps `X-Served-By` on every response. (Starlette's `BaseHTTPMiddleware` would cost far
    more per request than the prediction itself.)
    """

    def __init__(
        self, app: ASGIApp, metrics: ServerMetrics, served_by: str, route_templates: dict[object, str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.served_by = (b"x-served-by", served_by.encode())
        # The router records the matched endpoint in the scope; its template is the label.
        self.route_templates = route_templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_header(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self.served_by]
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            template = self.route_templates.get(scope.get("endpoint"), UNMATCHED_ROUTE)
            self.metrics.observe_request(template, scope["method"], status, time.perf_counter() - started)
