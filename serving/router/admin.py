"""The admin API, behind a bearer token: state of the backends, drain and undrain, Prometheus metrics.

- `GET /router/status`: the engine, the process id, policy, panic, retry budget, and per backend its
  state (healthy, unhealthy, ejected, drained), EWMA latency, ejections, requests in flight and last errors.
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
from typing import Protocol

from serving.router.config import RouterConfig
from serving.router.constants import ADMIN_PREFIX, METRICS_PATH
from serving.router.health import candidates
from serving.router.http_server import Request, Response, json_response
from serving.router.metrics import CONTENT_TYPE, RouterMetrics
from serving.router.proxy import Proxy
from serving.server.auth import bearer_token_matches

__all__ = ["AdminApi", "BuiltinControl", "RouterControl", "is_admin_path"]

logger = logging.getLogger("mct.router")

BACKENDS_PREFIX = ADMIN_PREFIX + b"backends/"


def is_admin_path(target: bytes) -> bool:
    """Whether a request target is the router's own (else it is proxied)."""
    return target.startswith(ADMIN_PREFIX) or target.split(b"?", 1)[0] == METRICS_PATH


class RouterControl(Protocol):
    """What the admin API reads and moves, whichever engine routes: the built-in proxy or HAProxy."""

    def status(self) -> dict[str, object]:
        """The document `GET /router/status` returns."""
        ...

    def set_drained(self, name: str, drained: bool) -> list[str]:
        """Drain or undrain the backends of `name` (a backend or a cloud); their names, [] if none match."""
        ...

    def known(self) -> list[str]:
        """The backend and cloud names `set_drained` accepts."""
        ...

    def metrics(self) -> bytes | None:
        """Prometheus text for `GET /metrics`, or None where metrics are served elsewhere."""
        ...


class AdminApi:
    """Answers the admin routes, behind the bearer token, from a `RouterControl`."""

    def __init__(self, control: RouterControl, token: str | None) -> None:
        self.control = control
        self.token = token

    async def handle(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        path = request.target.split(b"?", 1)[0]
        metrics = self.control.metrics() if path == METRICS_PATH else None
        if metrics is not None:
            return self._only(request, b"GET") or Response(200, b"content-type: " + CONTENT_TYPE + b"\r\n", metrics)
        if path == ADMIN_PREFIX + b"status":
            return self._only(request, b"GET") or json_response(200, self.control.status())
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

    def _drain(self, name: str, drained: bool) -> Response:
        names = self.control.set_drained(name, drained)
        if not names:
            known = ", ".join(self.control.known())
            return json_response(404, {"error": f"no backend or cloud called {name!r}", "known": known})
        logger.info("%s %s", "drained" if drained else "undrained", ", ".join(names))
        return json_response(200, {"drained" if drained else "undrained": names})

    def _refusal(self, request: Request) -> Response | None:
        token = self.token
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


class BuiltinControl:
    """The built-in engine's live routing table, as a `RouterControl`."""

    def __init__(self, proxy: Proxy, metrics: RouterMetrics, config: RouterConfig, clock: Callable[[], float]) -> None:
        self.proxy = proxy
        self._metrics = metrics
        self.config = config
        self._clock = clock

    def status(self) -> dict[str, object]:
        table = self.proxy.table
        now = self._clock()
        available, panic = candidates(table.backends.tiers, now)
        return {
            "engine": "builtin",
            "pid": os.getpid(),  # which router answered, e.g. during a hand-over between two processes
            "policy": self.config.policy,
            "panic": panic,
            "available": [backend.name for backend in available] if not panic else [],
            "retry_budget": table.budget.snapshot(now),
            "backends": [backend.status(now) for backend in table.backends.backends],
        }

    def set_drained(self, name: str, drained: bool) -> list[str]:
        matched = self.proxy.table.backends.matching(name)
        for backend in matched:
            backend.health.drained = drained
        return [backend.name for backend in matched]

    def known(self) -> list[str]:
        backends = self.proxy.table.backends
        return sorted({*backends.by_name, *(backend.cloud for backend in backends.backends)})

    def metrics(self) -> bytes:
        return self._metrics.render()
