"""The backends: each one's configuration and live state, and the pick of the one that takes the next try.

A pick is two steps, each in its own module: `health.candidates` narrows the backends to those the try
may go to (preferred tier first, available, not tried yet, panic when none), then the policy chooses
one of them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.router.config import BackendSpec
from serving.router.health import HealthState, candidates
from serving.router.policies import PeakEwma, Policy

__all__ = ["Backend", "BackendSet"]


class Backend:
    """One model server URL: where it is, and what the router has learned about it."""

    __slots__ = ("cloud", "health", "in_flight", "last_error", "latency", "name", "routed_to", "spec", "tier", "weight")

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.cloud = spec.cloud
        self.tier = spec.tier
        self.weight = spec.weight
        self.routed_to = spec.name.encode()
        self.in_flight = 0
        self.latency = PeakEwma()
        self.health = HealthState()
        self.last_error: str | None = None

    def reconfigure(self, spec: BackendSpec) -> None:
        """Take a reloaded spec for the same name and URL, keeping what was learned."""
        self.spec = spec
        self.tier = spec.tier
        self.weight = spec.weight

    def status(self, now: float) -> dict[str, Any]:
        """The backend as `GET /router/status` shows it."""
        health = self.health
        if health.drained:
            state = "drained"
        elif health.ejected(now):
            state = "ejected"
        elif not health.healthy:
            state = "unhealthy"
        else:
            state = "healthy"
        return {
            "name": self.name,
            "cloud": self.cloud,
            "url": self.spec.url,
            "tier": self.tier,
            "weight": self.weight,
            "state": state,
            "healthy": health.healthy,
            "drained": health.drained,
            "ejected": health.ejected(now),
            "ejected_for_seconds": round(max(health.ejected_until - now, 0.0), 3),
            "ejections": health.ejections,
            "consecutive_failures": health.failures,
            "in_flight": self.in_flight,
            "ewma_latency_ms": round(self.latency.value(now) * 1000, 3),
            "last_check_error": health.last_check_error,
            "last_error": self.last_error,
        }


class BackendSet:
    """The backends in configuration order, grouped by tier, and the policy that chooses among them."""

    def __init__(self, backends: Sequence[Backend], policy: Policy) -> None:
        self.backends = list(backends)
        self.policy = policy
        self.by_name = {backend.name: backend for backend in self.backends}
        self.tiers = [
            [backend for backend in self.backends if backend.tier == tier]
            for tier in sorted({backend.tier for backend in self.backends})
        ]

    def pick(self, now: float, tried: Sequence[Backend] = ()) -> tuple[Backend | None, bool]:
        """The backend for the next try (None when every one was tried or is drained), and whether
        this is a panic pick (no backend available, so one that looks down is tried anyway)."""
        found, panic = candidates(self.tiers, now, tried)
        if not found:
            return None, False
        return self.policy.select(found, now), panic

    def matching(self, name: str) -> list[Backend]:
        """The backend called `name`, or every backend of the cloud called `name`."""
        if name in self.by_name:
            return [self.by_name[name]]
        return [backend for backend in self.backends if backend.cloud == name]
