"""Backend health: active checks, passive outlier ejection, and which backends may take the next try.

Three inputs decide whether a backend is *available* (may take new requests):

- **Active checks**: `GET /v2/health/ready` every interval; `unhealthy_threshold` failures in a row mark
  it unhealthy, `healthy_threshold` passes in a row healthy again. Backends start healthy, so that a
  router serves from its first request.
- **Passive ejection**: the proxy reports every try. `after_failures` failed tries in a row (connection
  error, timeout, 5xx) eject the backend for `base_seconds`, doubled for each ejection that follows a
  failed comeback, up to `max_seconds`; one base period without ejection forgets one doubling. A
  backend back from ejection is on probation: its first failure ejects it again, before any success
  has reset its count. Never more than `max_ejected_percent` of the backends are ejected at once (at
  least one may be). An ejected backend whose active checks had failed and then pass again (it was
  down and came back) is readmitted at once rather than at the end of its back-off.
- **Drain**: an operator's choice; a drained backend takes no new request, even in panic.

`candidates` walks the tiers in order and returns the available, not yet tried backends of the first
tier that has any. When there are none it **panics** (fails open): every backend not drained and not
yet tried is a candidate, healthy or not, since trying a backend that looks down beats failing a
request that one of them might answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from serving.router.config import EjectionConfig, HealthConfig
from serving.router.constants import HEALTH_JITTER_FRACTION

__all__ = ["HealthChecker", "HealthState", "HealthTracker", "Monitored", "candidates"]

logger = logging.getLogger("mct.router")


@dataclass(slots=True)
class HealthState:
    """What the router knows about one backend's health."""

    healthy: bool = True  # the active checks' verdict
    check_passes: int = 0  # consecutive
    check_failures: int = 0  # consecutive
    last_check_error: str | None = None
    failures: int = 0  # consecutive failed tries (passive); a success resets it
    ejected_until: float = 0.0  # monotonic time; in the past when not ejected
    ejection_level: int = 0  # ejections since the backend last stayed in: sets the next back-off
    ejections: int = 0  # in total, for status and metrics
    ejected_while_down: bool = False  # the active checks were failing when (or while) it was ejected
    drained: bool = False

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def available(self, now: float) -> bool:
        """Whether the backend may take new requests outside panic."""
        return self.healthy and not self.drained and self.ejected_until <= now


class Monitored(Protocol):
    """What health decisions read of a backend."""

    name: str
    health: HealthState


M = TypeVar("M", bound=Monitored)


def candidates(tiers: Sequence[Sequence[M]], now: float, tried: Sequence[M] = ()) -> tuple[list[M], bool]:
    """The backends the next try may go to, and whether that is a panic (none available).

    `tiers` lists the backends by tier, preferred first.
    """
    for tier in tiers:
        available = [backend for backend in tier if backend.health.available(now) and backend not in tried]
        if available:
            return available, False
    fallback = [backend for tier in tiers for backend in tier if not backend.health.drained and backend not in tried]
    return fallback, bool(fallback)


class HealthTracker:
    """The state machine behind `HealthState`: active check results and passive try outcomes go in."""

    def __init__(self, health: HealthConfig, ejection: EjectionConfig) -> None:
        self.health = health
        self.ejection = ejection

    def record_check(self, backend: Monitored, passed: bool, now: float, error: str | None = None) -> bool | None:
        """Count one active check; the new verdict if it changed (True: healthy again), else None."""
        state = backend.health
        state.last_check_error = None if passed else error
        if passed:
            state.check_passes += 1
            state.check_failures = 0
            if state.healthy or state.check_passes < self.health.healthy_threshold:
                return None
            state.healthy = True
            if state.ejected_while_down and state.ejected(now):
                # It was down and is back: readmit it now rather than when its back-off ends.
                state.ejected_until = now
                state.failures = 0
            state.ejected_while_down = False
            return True
        state.check_failures += 1
        state.check_passes = 0
        if state.ejected(now):
            state.ejected_while_down = True
        if not state.healthy or state.check_failures < self.health.unhealthy_threshold:
            return None
        state.healthy = False
        return False

    def record_success(self, backend: Monitored) -> None:
        """A try got an answer that is not a server error."""
        backend.health.failures = 0

    def record_failure(self, backend: Monitored, now: float, backends: Sequence[Monitored]) -> float | None:
        """A try failed (connection error, timeout or 5xx); the ejection's length if this ejects it."""
        state = backend.health
        state.failures += 1
        if state.failures < self.ejection.after_failures or state.ejected(now):
            return None
        ejected = sum(1 for other in backends if other.health.ejected(now))
        if ejected >= self.max_ejected(len(backends)):
            return None
        quiet_seconds = max(now - state.ejected_until, 0.0)
        forgotten = int(quiet_seconds // self.ejection.base_seconds) if state.ejected_until else 0
        state.ejection_level = max(state.ejection_level - forgotten, 0) + 1
        seconds = min(self.ejection.base_seconds * 2 ** (state.ejection_level - 1), self.ejection.max_seconds)
        state.ejected_until = now + seconds
        state.ejections += 1
        state.ejected_while_down = not state.healthy
        return seconds

    def max_ejected(self, backend_count: int) -> int:
        """How many of `backend_count` backends may be ejected at once."""
        if not self.ejection.max_ejected_percent:
            return 0
        return max(1, backend_count * self.ejection.max_ejected_percent // 100)


class HealthChecker(Generic[M]):
    """Runs the active checks: one task per backend, each probing every interval (with a little jitter).

    `probe` raises when a backend fails its check; `on_change` hears each change of verdict.
    """

    def __init__(
        self,
        tracker: HealthTracker,
        probe: Callable[[M], Awaitable[None]],
        clock: Callable[[], float],
        on_change: Callable[[M, bool], None],
    ) -> None:
        self.tracker = tracker
        self._probe = probe
        self._clock = clock
        self._on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, backends: Sequence[M]) -> None:
        """Probe these backends (and stop probing any other)."""
        self.stop()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(backend)) for backend in backends]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _run(self, backend: M) -> None:
        interval = self.tracker.health.interval_seconds
        while True:
            error: str | None = None
            try:
                await self._probe(backend)
            except Exception as exc:
                error = str(exc) or type(exc).__name__
            verdict = self.tracker.record_check(backend, error is None, self._clock(), error)
            if verdict is not None:
                self._on_change(backend, verdict)
            await asyncio.sleep(interval * (1.0 + HEALTH_JITTER_FRACTION * (2 * random.random() - 1)))
