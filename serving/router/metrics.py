"""Prometheus metrics of one router (`GET /metrics`).

Counters and the latency histogram are updated on the hot path through children bound once per
backend (no label lookup per request); gauges (in flight, health, ejection, drain, EWMA latency) are
read from the live state when scraped, costing nothing per request. Each router has its own registry,
so routers created side by side (tests) never share series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.router.backends import Backend
from serving.router.constants import LATENCY_BUCKETS_SECONDS

__all__ = ["CONTENT_TYPE", "BackendSeries", "RouterMetrics"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ERROR_OUTCOMES = ("connect_error", "timeout", "reset", "bad_response")


class BackendSeries:
    """One backend's counters and histogram, bound to its label once."""

    __slots__ = ("ejections", "latency", "outcomes", "retries")

    def __init__(self, metrics: RouterMetrics, name: str) -> None:
        self.outcomes = {outcome: metrics.tries.labels(name, outcome) for outcome in (*STATUS_CLASSES, *ERROR_OUTCOMES)}
        self.latency = metrics.latency.labels(name)
        self.retries = metrics.retries.labels(name)
        self.ejections = metrics.ejections.labels(name)

    def answered(self, status: int, seconds: float) -> None:
        """Count a try the backend answered (any status) and time it."""
        self.outcomes[STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]].inc()
        self.latency.observe(seconds)

    def failed(self, outcome: str) -> None:
        """Count a try that got no answer (`UpstreamError.outcome`)."""
        self.outcomes[outcome].inc()


class _LiveState(Collector):
    def __init__(self, backends: Callable[[], Sequence[Backend]], clock: Callable[[], float]) -> None:
        self._backends = backends
        self._clock = clock

    def describe(self) -> Iterator[Any]:
        # The registry asks at registration, before any backend exists: names only.
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        now = self._clock()
        families = self._families()
        for backend in self._backends():
            labels = [backend.name]
            families["in_flight"].add_metric(labels, backend.in_flight)
            families["healthy"].add_metric(labels, float(backend.health.healthy))
            families["ejected"].add_metric(labels, float(backend.health.ejected(now)))
            families["drained"].add_metric(labels, float(backend.health.drained))
            families["ewma"].add_metric(labels, backend.latency.value(now))
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "in_flight": GaugeMetricFamily(
                "mct_router_backend_in_flight", "Tries in flight to the backend", labels=["backend"]
            ),
            "healthy": GaugeMetricFamily(
                "mct_router_backend_healthy", "1 if the active health checks pass", labels=["backend"]
            ),
            "ejected": GaugeMetricFamily(
                "mct_router_backend_ejected", "1 while ejected for consecutive failures", labels=["backend"]
            ),
            "drained": GaugeMetricFamily(
                "mct_router_backend_drained", "1 while drained by an operator", labels=["backend"]
            ),
            "ewma": GaugeMetricFamily(
                "mct_router_backend_ewma_latency_seconds", "Peak-EWMA latency estimate", labels=["backend"]
            ),
        }


class RouterMetrics:
    """Every series the router exposes."""

    def __init__(self, backends: Callable[[], Sequence[Backend]], clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mct_router_requests", "Client requests answered, by status code", ["code"], registry=self.registry
        )
        self.tries = Counter(
            "mct_router_backend_tries",
            "Tries sent to a backend, by outcome (status class or error)",
            ["backend", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mct_router_backend_latency_seconds",
            "Time for a backend to answer a try",
            ["backend"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.retries = Counter(
            "mct_router_retries",
            "Retries and hedges, by the backend whose failure or slowness caused them",
            ["backend"],
            registry=self.registry,
        )
        self.ejections = Counter(
            "mct_router_ejections", "Outlier ejections of a backend", ["backend"], registry=self.registry
        )
        self.budget_exhausted = Counter(
            "mct_router_retry_budget_exhausted", "Retries refused by the retry budget", registry=self.registry
        )
        self.panic_tries = Counter(
            "mct_router_panic_tries",
            "Tries sent to a backend that looked down because none was available",
            registry=self.registry,
        )
        self.registry.register(_LiveState(backends, clock))
        self._codes: dict[int, Any] = {}

    def series(self, name: str) -> BackendSeries:
        """The bound series of one backend."""
        return BackendSeries(self, name)

    def forget(self, name: str) -> None:
        """Drop a backend's series (it left the configuration)."""
        for outcome in (*STATUS_CLASSES, *ERROR_OUTCOMES):
            self.tries.remove(name, outcome)
        for family in (self.latency, self.retries, self.ejections):
            family.remove(name)

    def answered(self, status: int) -> None:
        """Count a client request by the status it was answered with."""
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = self.requests.labels(str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
