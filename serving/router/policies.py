"""Load-balancing policies: choose one backend among the candidates, with no I/O.

Which backends are candidates (tier, health, ejection, drain, already tried) is decided before a policy
is asked (`serving.router.health.candidates`); a policy only ranks them. Policies register by name
(`class RoundRobin(Policy, name="round_robin")`), one of them marked the default:

- `round_robin`: each candidate in turn.
- `weighted`: smooth weighted round robin (nginx's): shares follow the weights, evenly interleaved.
- `least_outstanding`: power of two choices: two random candidates, the one with fewer requests in
  flight per unit of weight.
- `peak_ewma` (default): power of two choices on peak-EWMA latency times (requests in flight + 1), per
  unit of weight (Finagle, Linkerd): latency-aware, and quick to leave a backend that slows down.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from serving.router.constants import EWMA_DECAY_SECONDS, UNSEEN_BACKEND_PENALTY

__all__ = [
    "DEFAULT_POLICY",
    "Candidate",
    "LeastOutstanding",
    "PeakEwma",
    "PeakEwmaPolicy",
    "Policy",
    "RoundRobin",
    "Weighted",
    "make_policy",
    "policy_names",
]


class PeakEwma:
    """A latency estimate that jumps up to a slower sample at once and decays towards faster ones.

    With no sample for a while the estimate decays towards zero, so that a backend passed over in the
    past is tried again instead of being starved on an old figure.
    """

    __slots__ = ("decay_seconds", "estimate_seconds", "stamp")

    def __init__(self, decay_seconds: float = EWMA_DECAY_SECONDS) -> None:
        self.decay_seconds = decay_seconds
        self.estimate_seconds = 0.0
        self.stamp = 0.0

    def observe(self, seconds: float, now: float) -> None:
        """Fold in one latency sample taken at `now`."""
        current = self.value(now)
        self.estimate_seconds = seconds if seconds > current else current + (seconds - current) * self._weight(now)
        self.stamp = now

    def value(self, now: float) -> float:
        """The estimate at `now`, decayed since the last sample."""
        if not self.estimate_seconds:
            return 0.0
        return self.estimate_seconds * math.exp(-max(now - self.stamp, 0.0) / self.decay_seconds)

    def _weight(self, now: float) -> float:
        # The new sample's weight: older estimates count for less the longer ago they were made.
        return 1.0 - math.exp(-max(now - self.stamp, 0.0) / self.decay_seconds)


class Candidate(Protocol):
    """What a policy reads of a backend."""

    name: str
    weight: float
    in_flight: int
    latency: PeakEwma


C = TypeVar("C", bound=Candidate)


class Policy(ABC):
    """Chooses one of the candidates; subclasses register with `name=` (and `default=True` for one)."""

    registry: ClassVar[dict[str, type[Policy]]] = {}
    name: ClassVar[str]
    is_default: ClassVar[bool] = False

    def __init_subclass__(cls, *, name: str | None = None, default: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:  # a base for other policies, not a policy of its own
            return
        if name in Policy.registry:
            raise ValueError(f"policy {name!r} is registered twice")
        cls.name, cls.is_default = name, default
        Policy.registry[name] = cls

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    @abstractmethod
    def select(self, candidates: Sequence[C], now: float) -> C:
        """One of `candidates` (never empty) for the next try at time `now`."""


class RoundRobin(Policy, name="round_robin"):
    """Each candidate in turn, ignoring weights and load."""

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._turn = 0

    def select(self, candidates: Sequence[C], now: float) -> C:
        chosen = candidates[self._turn % len(candidates)]
        self._turn += 1
        return chosen


class Weighted(Policy, name="weighted"):
    """Smooth weighted round robin: over any run of picks each candidate's share follows its weight."""

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._current: dict[str, float] = {}

    def select(self, candidates: Sequence[C], now: float) -> C:
        current = self._current
        total = 0.0
        best = candidates[0]
        best_score = -math.inf
        for candidate in candidates:
            score = current.get(candidate.name, 0.0) + candidate.weight
            current[candidate.name] = score
            total += candidate.weight
            if score > best_score:
                best, best_score = candidate, score
        current[best.name] = best_score - total
        return best


class _PowerOfTwoChoices(Policy):
    """Two distinct random candidates; the one with the lower `load` wins (ties: the first drawn)."""

    def select(self, candidates: Sequence[C], now: float) -> C:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self.rng.randrange(count)
        second = self.rng.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return b if self.load(b, now) < self.load(a, now) else a

    @abstractmethod
    def load(self, candidate: Candidate, now: float) -> float:
        """The figure two candidates are compared on; lower wins."""


class LeastOutstanding(_PowerOfTwoChoices, name="least_outstanding"):
    """Power of two choices on requests in flight per unit of weight."""

    def load(self, candidate: Candidate, now: float) -> float:
        return candidate.in_flight / candidate.weight


class PeakEwmaPolicy(_PowerOfTwoChoices, name="peak_ewma", default=True):
    """Power of two choices on peak-EWMA latency times (requests in flight + 1), per unit of weight."""

    def load(self, candidate: Candidate, now: float) -> float:
        latency = candidate.latency.value(now)
        if not latency and candidate.in_flight:
            # Busy but never measured: one request at a time until its latency is known.
            return UNSEEN_BACKEND_PENALTY + candidate.in_flight
        return latency * (candidate.in_flight + 1) / candidate.weight


DEFAULT_POLICY: str = next(name for name, policy in Policy.registry.items() if policy.is_default)


def policy_names() -> list[str]:
    """The registered policies' names, sorted."""
    return sorted(Policy.registry)


def make_policy(name: str, rng: random.Random | None = None) -> Policy:
    """A new instance of the policy registered as `name` (the configuration has validated it)."""
    return Policy.registry[name](rng)
