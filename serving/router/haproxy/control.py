"""The admin API's view of a running HAProxy (a `RouterControl`): status, drain and undrain through the
runtime API, in the same shape as the built-in router's, so that scripts and drills read both alike."""

from __future__ import annotations

import os

from serving.router.config import BackendSpec, RouterConfig
from serving.router.haproxy.render import BACKEND, POLICIES
from serving.router.haproxy.runtime import RuntimeApi, ServerStat

__all__ = ["HaproxyControl"]


class HaproxyControl:
    """Status and drain of the servers of HAProxy's backend, by the router's backend and cloud names."""

    def __init__(self, runtime: RuntimeApi, config: RouterConfig, haproxy_pid: int | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.haproxy_pid = haproxy_pid
        self.reloads = 0

    def status(self) -> dict[str, object]:
        specs = {spec.name: spec for spec in self.config.backends}
        stats = {stat.name: stat for stat in self.runtime.servers(BACKEND)}
        backends = [_backend(specs[name], stat) for name, stat in stats.items() if name in specs]
        healthy = [item for item in backends if item["state"] == "healthy"]
        preferred = min((specs[str(item["name"])].tier for item in healthy), default=0)
        return {
            "engine": "haproxy",
            "pid": os.getpid(),
            "haproxy_pid": self.haproxy_pid,
            "reloads": self.reloads,
            "policy": f"{self.config.policy} (HAProxy balance {POLICIES[self.config.policy]})",
            "panic": False,  # HAProxy answers 503 when no server is up
            "available": [item["name"] for item in healthy if item["tier"] == preferred],
            "retry_budget": None,  # HAProxy bounds retries per request only
            "backends": backends,
        }

    def set_drained(self, name: str, drained: bool) -> list[str]:
        matched = [spec.name for spec in self.config.backends if name in (spec.name, spec.cloud)]
        for server in matched:
            self.runtime.set_state(BACKEND, server, "drain" if drained else "ready")
        return matched

    def known(self) -> list[str]:
        return sorted({*(spec.name for spec in self.config.backends), *(spec.cloud for spec in self.config.backends)})

    def metrics(self) -> None:
        return None  # HAProxy's own Prometheus exporter answers /metrics


def _backend(spec: BackendSpec, stat: ServerStat) -> dict[str, object]:
    status = stat.status.upper()
    if stat.admin_drain or status.startswith("MAINT"):
        state = "drained"
    elif status.startswith("UP") or status == "NO CHECK":
        state = "healthy"
    else:
        state = "unhealthy"
    return {
        "name": spec.name,
        "cloud": spec.cloud,
        "url": spec.url,
        "tier": spec.tier,
        "weight": spec.weight,
        "state": state,
        "healthy": state != "unhealthy",
        "drained": state == "drained",
        "ejected": False,  # HAProxy marks a server down (`observe layer7`) rather than ejecting it for a while
        "ejected_for_seconds": 0.0,
        "ejections": stat.downs,
        "consecutive_failures": None,
        "in_flight": stat.current_sessions,
        "ewma_latency_ms": float(stat.response_ms),
        "last_check_error": None if state == "healthy" else f"{stat.check_status} {stat.check_description}".strip(),
        "last_error": None,
        "haproxy_status": stat.status,
    }
