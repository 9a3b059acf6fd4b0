"""The admin API, behind a bearer token: state of the backends, drain and undrain, Prometheus metrics.

- `GET /router/status`: the process id, policy, panic, retry budget, and per backend its state (healthy, unhealthy,
  ejected, drained), EWMA latency, ejections, requests in flight and last errors.
- `POST /router/backends/NAME/drain` and `.../undrain`: NAME is a backend or a cloud (all its backends).
  A drained backend takes no new request, even in panic; its requests in flight finish.
- `GET /metrics`: Prometheus text format.

Every route needs `Authorization: Bearer TOKEN` (401 otherwise). Without a configured token the admin
API is off (403 saying how to turn it on): a router's state and controls are not for anyone who can
reach its port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from serving.router.config import RouterConfig
from serving.router.constants import ADMIN_PREFIX, METRICS_PATH
from serving.router.health import candidates
from serving.router.http_server import Request, Response, json_response
from serving.router.metrics import CONTENT_TYPE, RouterMetrics
from serving.router.proxy import Proxy
from serving.server.auth import bearer_token_matches

__all__ = ["AdminApi", "is_admin_path"]

logger = logging.getLogger("mct.router")

BACKENDS_PREFIX = ADMIN_PREFIX + b"backends/"


def is_admin_path(target: bytes) -> bool:
    """Whether a request target is the router's own (else it is proxied)."""
    return target.startswith(ADMIN_PREFIX) or target.split(b"?", 1)[0] == METRICS_PATH


class AdminApi:
    """Answers the admin routes from the proxy's live routing table."""

    def __init__(self, proxy: Proxy, metrics: RouterMetrics, config: RouterConfig, clock: Callable[[], float]) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.config = config
        self._clock = clock

    async def handle(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        path = request.target.split(b"?", 1)[0]
        if path == METRICS_PATH:
            return self._only(request, b"GET") or Response(
                200, b"content-type: " + CONTENT_TYPE + b"\r\n", self.metrics.render()
            )
        if path == ADMIN_PREFIX + b"status":
            return self._only(request, b"GET") or json_response(200, self.status())
        if path.startswith(BACKENDS_PREFIX):
            name, _, action = path[len(BACKENDS_PREFIX) :].decode(errors="replace").partition("/")
            if action in ("drain", "undrain"):
                return self._only(request, b"POST") or self._drain(name, action == "drain")
        return json_response(
            404,
            {
                "error": f"no admin route {path.decode(errors='replace')}",
                "routes": [
                    "GET /router/status",
                    "POST /router/backends/NAME/drain",
                    "POST /router/backends/NAME/undrain",
                    "GET /metrics",
                ],
            },
        )

    def status(self) -> dict[str, object]:
        """The document `GET /router/status` returns."""
        table = self.proxy.table
        now = self._clock()
        available, panic = candidates(table.backends.tiers, now)
        return {
            "pid": os.getpid(),  # which router answered, e.g. during a hand-over between two processes
            "policy": self.config.policy,
            "panic": panic,
            "available": [backend.name for backend in available] if not panic else [],
            "retry_budget": table.budget.snapshot(now),
            "backends": [backend.status(now) for backend in table.backends.backends],
        }

    def _drain(self, name: str, drained: bool) -> Response:
        backends = self.proxy.table.backends
        matched = backends.matching(name)
        if not matched:
            known = ", ".join(sorted({*backends.by_name, *(backend.cloud for backend in backends.backends)}))
            return json_response(404, {"error": f"no backend or cloud called {name!r}", "known": known})
        for backend in matched:
            backend.health.drained = drained
        names = [backend.name for backend in matched]
        logger.info("%s %s", "drained" if drained else "undrained", ", ".join(names))
        return json_response(200, {"drained" if drained else "undrained": names})

    def _refusal(self, request: Request) -> Response | None:
        token = self.config.admin_token
        if token is None:
            return json_response(
                403,
                {
                    "error": "the admin API is off: no admin token is configured",
                    "hint": "start the router with --admin-token or MCT_ROUTER__ADMIN_TOKEN set",
                },
            )
        authorization = request.header(b"authorization")
        if bearer_token_matches(authorization.decode("latin-1") if authorization else None, token):
            return None
        return json_response(
            401,
            {"error": "missing or wrong admin token: send Authorization: Bearer TOKEN"},
            b'www-authenticate: Bearer realm="mct-router"\r\n',
        )

    @staticmethod
    def _only(request: Request, method: bytes) -> Response | None:
        if request.method == method:
            return None
        return json_response(405, {"error": f"use {method.decode()} here"}, b"allow: " + method + b"\r\n")
