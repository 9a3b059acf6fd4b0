"""Assemble and run the built-in router: listener, proxy, active health checks and admin API.

`run_router` runs one on uvloop until SIGTERM or SIGINT (then stops gracefully: no new connections,
requests in flight get `SHUTDOWN_GRACE_SECONDS`). SIGHUP re-reads the configuration: backends whose name
and URL are unchanged keep what the router learned (health, ejection, latency, drain, pooled
connections); added ones start fresh, removed ones are closed. A configuration that does not validate
is logged and the running one kept. The listen address cannot change without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from serving.router.admin import AdminApi, BuiltinControl, is_admin_path
from serving.router.backends import Backend, BackendSet
from serving.router.config import RouterConfig
from serving.router.constants import METRICS_PATH, SHUTDOWN_GRACE_SECONDS
from serving.router.health import HealthChecker, HealthTracker
from serving.router.http_client import UpstreamPool
from serving.router.http_server import HttpServer, Request, Response, json_response
from serving.router.metrics import CONTENT_TYPE, RouterMetrics
from serving.router.policies import make_policy
from serving.router.proxy import Proxy, RoutingTable, Upstream
from serving.router.retry import RetryBudget
from toolkit.errors import ToolkitError

__all__ = ["ProbeFailed", "Router", "run_router", "serve"]

logger = logging.getLogger("mct.router")


class ProbeFailed(Exception):
    """A health check got an answer other than 2xx."""


class Router:
    """One router: create it inside a running event loop, then `start`, `reload` and `stop` it."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        # uvloop's loop.time() is libuv's millisecond clock, cached per loop iteration: too coarse to
        # time sub-millisecond tries. Deadlines (call_at) keep using the loop's own clock.
        clock = self.clock = time.monotonic
        self.metrics = RouterMetrics(lambda: self.proxy.table.backends.backends, clock)
        self.proxy = Proxy(self._routing_table(config, None), self.metrics, clock)
        self.control = BuiltinControl(self.proxy, self.metrics, config, clock)
        self.admin = AdminApi(self.control, config.admin_token)
        self.checker = self._health_checker()
        self.server = HttpServer(self._handle, config.max_body_bytes)
        self.metrics_server = HttpServer(self._metrics_only, 0) if config.metrics_port is not None else None
        self.port: int | None = None

    async def start(self) -> int:
        """Listen and start the health checks; the port bound."""
        self.port = await self.server.start(self.config.host, self.config.port, self.config.reuse_port)
        if self.metrics_server is not None and self.config.metrics_port is not None:
            await self.metrics_server.start(self.config.host, self.config.metrics_port, self.config.reuse_port)
        self.checker.start(self.proxy.table.backends.backends)
        return self.port

    async def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop listening and checking, let requests in flight finish, close every connection."""
        self.checker.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop(0.5)
        await self.server.stop(grace_seconds)
        for upstream in self.proxy.table.upstreams.values():
            upstream.pool.close()

    def reload(self, config: RouterConfig) -> None:
        """Switch to a new configuration, keeping the state of the backends that did not change."""
        if (config.host, config.port) != (self.config.host, self.config.port):
            logger.warning(
                "the listen address stays %s:%s until a restart (the new configuration says %s:%s)",
                self.config.host,
                self.config.port,
                config.host,
                config.port,
            )
        self.checker.stop()
        self.proxy.table = self._routing_table(config, self.proxy.table)
        self.config = self.control.config = config
        self.admin.token = config.admin_token
        self.server.max_body_bytes = config.max_body_bytes
        self.checker = self._health_checker()
        self.checker.start(self.proxy.table.backends.backends)
        logger.info("configuration reloaded: %s", describe_backends(config))

    async def _handle(self, request: Request) -> Response:
        if is_admin_path(request.target):
            return await self.admin.handle(request)
        return await self.proxy.forward(request)

    async def _metrics_only(self, request: Request) -> Response:
        """The metrics port: Prometheus text at /metrics, without the token (a private scrape address)."""
        if request.target.split(b"?", 1)[0] == METRICS_PATH and request.method == b"GET":
            return Response(200, b"content-type: " + CONTENT_TYPE + b"\r\n", self.metrics.render())
        return json_response(404, {"error": "this port serves GET /metrics only"})

    def _routing_table(self, config: RouterConfig, previous: RoutingTable | None) -> RoutingTable:
        kept: dict[tuple[str, str], Backend] = {}
        upstreams: dict[Backend, Upstream] = {}
        if previous is not None:
            wanted = {(spec.name, spec.url) for spec in config.backends}
            for backend, upstream in previous.upstreams.items():
                if (backend.name, backend.spec.url) in wanted:
                    kept[(backend.name, backend.spec.url)] = backend
                else:
                    upstream.pool.close()
                    self.metrics.forget(backend.name)
        backends = []
        for spec in config.backends:
            old = kept.get((spec.name, spec.url))
            if old is not None and previous is not None:
                old.reconfigure(spec)
                backend, upstreams[old] = old, previous.upstreams[old]
            else:
                backend = Backend(spec)
                pool = UpstreamPool(spec.host, spec.port, tls=spec.scheme == "https", base_path=spec.base_path)
                upstreams[backend] = Upstream(pool, self.metrics.series(spec.name))
            backends.append(backend)
        retry = config.retry
        budget = previous.budget if previous is not None else RetryBudget(0.0, 0.0)
        budget.percent, budget.min_per_second = retry.budget_percent, retry.budget_min_per_second
        return RoutingTable(
            backends=BackendSet(backends, make_policy(config.policy)),
            upstreams=upstreams,
            tracker=HealthTracker(config.health, config.ejection),
            retry=retry,
            budget=budget,
        )

    def _health_checker(self) -> HealthChecker[Backend]:
        return HealthChecker(self.proxy.table.tracker, self._probe, self.clock, self._health_changed)

    async def _probe(self, backend: Backend) -> None:
        health = self.config.health
        pool = self.proxy.table.upstreams[backend].pool
        response = await pool.request(b"GET", health.path.encode(), b"", b"", health.timeout_seconds)
        if not 200 <= response.status < 300:
            raise ProbeFailed(f"{health.path} answered {response.status}")

    def _health_changed(self, backend: Backend, healthy: bool) -> None:
        if healthy:
            logger.info("backend %s is healthy again", backend.name)
        else:
            logger.warning(
                "backend %s is unhealthy: %s failed %d times in a row (%s)",
                backend.name,
                self.config.health.path,
                backend.health.check_failures,
                backend.health.last_check_error,
            )


def describe_backends(config: RouterConfig) -> str:
    """One line: the policy and each backend with its tier."""
    backends = ", ".join(f"{spec.name}={spec.url} (tier {spec.tier})" for spec in config.backends)
    return f"policy {config.policy}; {backends}"


async def serve(config: RouterConfig, reload_config: Callable[[], RouterConfig] | None = None) -> None:
    """Run a router until SIGTERM or SIGINT; on SIGHUP, re-read the configuration with `reload_config`."""
    loop = asyncio.get_running_loop()
    router = Router(config)
    port = await router.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if reload_config is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(router, reload_config))
    admin = "on" if config.admin_token else "off (no admin token)"
    logger.info("routing http://%s:%d: %s; admin API %s", config.host, port, describe_backends(config), admin)
    await stopping.wait()
    logger.info("stopping: no new connections; draining (each connection closes after its next answer)")
    await router.stop()


def _reloader(router: Router, reload_config: Callable[[], RouterConfig]) -> Callable[[], None]:
    def reload() -> None:
        try:
            config = reload_config()
        except ToolkitError as exc:
            logger.error("configuration not reloaded, the previous one stays: %s", exc)
            return
        router.reload(config)

    return reload


def run_router(config: RouterConfig, reload_config: Callable[[], RouterConfig] | None = None) -> None:
    """Run a router in this process on uvloop (plain asyncio where uvloop is missing) until a stop signal."""
    try:
        import uvloop
    except ImportError:  # uvloop is not built for Windows
        asyncio.run(serve(config, reload_config))
    else:
        uvloop.run(serve(config, reload_config))
