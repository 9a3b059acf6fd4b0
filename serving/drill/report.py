"""The report of one scenario: what the clients saw, from the load's records and the router's status.

Failures are counted by cause; latency percentiles are given inside and outside the fault window; time to
detect is from the fault's start to the first status sample where the router has a faulted cloud out of
rotation (ejected or failing its health checks), time to recover from the fault's end to the first sample
where every faulted cloud is healthy again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from serving.drill.load import RequestRecord

__all__ = ["SLO", "ScenarioReport", "StatusSample", "build_report", "percentiles"]

PERCENTILES = (50, 95, 99)
HEALTHY = "healthy"


@dataclass(frozen=True, slots=True)
class StatusSample:
    """The router's view at `at` (seconds since the drill's start): each cloud's state."""

    at: float
    states: dict[str, str]


@dataclass(frozen=True)
class SLO:
    """What a drill must achieve: failed requests while a cloud was healthy, and optionally p99 latency."""

    max_failed: int = 0
    max_p99_ms: float | None = None


@dataclass
class ScenarioReport:
    """The figures of one scenario; `to_json` for report.json."""

    scenario: str
    description: str
    duration_seconds: float
    rps: float
    faulted: list[str]
    fault_window_seconds: tuple[float, float]
    model_version: str
    sent: int
    succeeded: int
    failed: int
    failed_by_cause: dict[str, int]
    failed_while_a_cloud_healthy: int
    answered_by: dict[str, int]
    wrong_version: int
    latency_ms: dict[str, dict[str, float | None]]
    detect_seconds: float | None
    recover_seconds: float | None
    slo_missed: list[str] = field(default_factory=list)

    @property
    def slo_met(self) -> bool:
        return not self.slo_missed

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "slo_met": self.slo_met}


def percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of `seconds`, in milliseconds (None without any sample)."""
    if not seconds:
        return {f"p{p}": None for p in PERCENTILES}
    values = np.percentile(np.asarray(seconds) * 1000, PERCENTILES)
    return {f"p{p}": round(float(value), 2) for p, value in zip(PERCENTILES, values, strict=True)}


def build_report(
    *,
    scenario: str,
    description: str,
    rps: float,
    duration_seconds: float,
    faulted: list[str],
    window: tuple[float, float],
    model_version: str,
    records: Sequence[RequestRecord],
    samples: Sequence[StatusSample],
    slo: SLO,
) -> ScenarioReport:
    """The report of one scenario, with the SLOs it missed."""
    start, end = window
    failures = [record for record in records if not record.ok]
    inside = [record.seconds for record in records if start <= record.sent_at < end]
    outside = [record.seconds for record in records if not start <= record.sent_at < end]
    report = ScenarioReport(
        scenario=scenario,
        description=description,
        duration_seconds=duration_seconds,
        rps=rps,
        faulted=faulted,
        fault_window_seconds=(round(start, 3), round(end, 3)),
        model_version=model_version,
        sent=len(records),
        succeeded=len(records) - len(failures),
        failed=len(failures),
        failed_by_cause=dict(Counter(record.cause or "" for record in failures)),
        failed_while_a_cloud_healthy=sum(1 for record in failures if _any_healthy(samples, record.sent_at)),
        answered_by=dict(sorted(Counter(record.routed_to or "?" for record in records if record.ok).items())),
        wrong_version=sum(1 for record in records if record.ok and record.model_version != model_version),
        latency_ms={"inside_fault_window": percentiles(inside), "outside_fault_window": percentiles(outside)},
        detect_seconds=_first(samples, start, lambda states: any(states.get(c) != HEALTHY for c in faulted), start),
        recover_seconds=_first(samples, end, lambda states: all(states.get(c) == HEALTHY for c in faulted), end),
    )
    if report.failed_while_a_cloud_healthy > slo.max_failed:
        report.slo_missed.append(
            f"{report.failed_while_a_cloud_healthy} failed while a cloud was healthy (at most {slo.max_failed})"
        )
    p99 = report.latency_ms["outside_fault_window"]["p99"]
    if slo.max_p99_ms is not None and (p99 is None or p99 > slo.max_p99_ms):
        report.slo_missed.append(f"p99 outside the fault window {p99} ms (at most {slo.max_p99_ms} ms)")
    return report


def _any_healthy(samples: Sequence[StatusSample], at: float) -> bool:
    """Whether the router had a healthy cloud at `at` (by the last sample before it; yes before any)."""
    before = [sample for sample in samples if sample.at <= at]
    return not before or any(state == HEALTHY for state in before[-1].states.values())


def _first(
    samples: Sequence[StatusSample], after: float, condition: Callable[[dict[str, str]], bool], origin: float
) -> float | None:
    for sample in samples:
        if sample.at >= after and condition(sample.states):
            return round(sample.at - origin, 3)
    return None
