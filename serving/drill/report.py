"""The report of one scenario: what the clients saw, from the load's records and the router's status.

Failures are counted by cause; latency percentiles are given inside and outside the fault window; time to
detect is from the fault's start to the first status sample where the router has a faulted server out of
rotation (ejected or failing its health checks), time to recover from the fault's end to the first sample
where every faulted server is healthy again. An answer is of the wrong version when its cloud could not
have been serving that version then (see `VersionSwitch`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from serving.drill.load import RequestRecord

__all__ = ["SLO", "DrillEvent", "ScenarioReport", "StatusSample", "VersionSwitch", "build_report", "percentiles"]

PERCENTILES = (50, 95, 99)
HEALTHY = "healthy"


@dataclass(frozen=True, slots=True)
class StatusSample:
    """The router's view at `at` (seconds since the drill's start): each cloud's state."""

    at: float
    states: dict[str, str]


@dataclass(frozen=True)
class DrillEvent:
    """One fault action: when it started and ended (seconds since the start) and what it found out."""

    verb: str
    at: float
    ended: float
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class VersionSwitch:
    """A cloud's pointer moved to `version` between `at` and `ended` (seconds since the start).

    From `at` on the cloud may answer with `version`; the version before stays acceptable until `ended`
    plus the reload grace (a server notices a new pointer at its next poll, then loads and verifies).
    """

    at: float
    ended: float
    version: str


@dataclass(frozen=True)
class SLO:
    """What a drill must achieve: failed requests while a cloud was healthy, and optionally p99 latency.

    Answers of a wrong version and a promotion that does not converge on every cloud always miss it.
    """

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
    answered_by_version: dict[str, dict[str, int]]
    wrong_version: int
    latency_ms: dict[str, dict[str, float | None]]
    detect_seconds: float | None
    recover_seconds: float | None
    events: list[DrillEvent] = field(default_factory=list)
    # A hard router restart: how long clients had no router, and what failed meanwhile (not held to the SLO).
    router_down_seconds: float | None = None
    failed_while_router_down: int | None = None
    # After a promotion: whether every cloud ended on the promoted version, and when (since the fault's end).
    converged: bool | None = None
    converge_seconds: float | None = None
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
    target: str,
    faulted: list[str],
    events: Sequence[DrillEvent],
    model_version: str,
    records: Sequence[RequestRecord],
    samples: Sequence[StatusSample],
    slo: SLO,
    versions: Mapping[str, Sequence[VersionSwitch]] | None = None,
    reload_grace_seconds: float = 0.0,
    router_down: bool = False,
    converge_seconds: float | None = None,
) -> ScenarioReport:
    """The report of one scenario, with the SLOs it missed.

    `target` is what the faults hit (servers, router or storage: detection and recovery are measured for
    servers); `versions` lists each cloud's pointer moves (none: every answer must be `model_version`);
    `router_down` says the fault window is a router outage; `converge_seconds` is set (None: never) for a
    scenario that promotes.
    """
    start, end = events[0].at, events[-1].ended
    failures = [record for record in records if not record.ok]
    inside = [record.seconds for record in records if start <= record.sent_at < end]
    outside = [record.seconds for record in records if not start <= record.sent_at < end]
    # In flight at some moment while the router was down.
    in_gap = [record for record in failures if record.sent_at <= end and record.sent_at + record.seconds >= start]
    by_version: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        if record.ok:
            by_version[record.routed_to or "?"][record.model_version or "?"] += 1
    servers = target == "servers"
    promoted = any(event.verb == "promote" for event in events)
    report = ScenarioReport(
        scenario=scenario,
        description=description,
        duration_seconds=duration_seconds,
        rps=rps,
        faulted=["router"] if target == "router" else faulted,
        fault_window_seconds=(round(start, 3), round(end, 3)),
        model_version=model_version,
        sent=len(records),
        succeeded=len(records) - len(failures),
        failed=len(failures),
        failed_by_cause=dict(Counter(record.cause or "" for record in failures)),
        failed_while_a_cloud_healthy=sum(1 for record in failures if _any_healthy(samples, record.sent_at)),
        answered_by=dict(sorted(Counter(record.routed_to or "?" for record in records if record.ok).items())),
        answered_by_version={cloud: dict(sorted(counts.items())) for cloud, counts in sorted(by_version.items())},
        wrong_version=sum(
            1
            for record in records
            if record.ok and not _acceptable(record, model_version, versions or {}, reload_grace_seconds)
        ),
        latency_ms={"inside_fault_window": percentiles(inside), "outside_fault_window": percentiles(outside)},
        detect_seconds=_first(samples, start, lambda states: any(states.get(c) != HEALTHY for c in faulted), start)
        if servers
        else None,
        recover_seconds=_first(samples, end, lambda states: all(states.get(c) == HEALTHY for c in faulted), end)
        if servers
        else None,
        events=list(events),
        router_down_seconds=round(end - start, 3) if router_down else None,
        failed_while_router_down=len(in_gap) if router_down else None,
        converged=converge_seconds is not None if promoted else None,
        converge_seconds=converge_seconds,
    )
    counted = report.failed_while_a_cloud_healthy - (len(in_gap) if router_down else 0)
    if counted > slo.max_failed:
        report.slo_missed.append(f"{counted} failed while a cloud was healthy (at most {slo.max_failed})")
    p99 = report.latency_ms["outside_fault_window"]["p99"]
    if slo.max_p99_ms is not None and (p99 is None or p99 > slo.max_p99_ms):
        report.slo_missed.append(f"p99 outside the fault window {p99} ms (at most {slo.max_p99_ms} ms)")
    if report.wrong_version:
        report.slo_missed.append(f"{report.wrong_version} answers of a version their cloud was not serving")
    if report.converged is False:
        report.slo_missed.append("the clouds did not converge on the promoted version")
    return report


def _acceptable(
    record: RequestRecord, initial: str, versions: Mapping[str, Sequence[VersionSwitch]], grace: float
) -> bool:
    """Whether the cloud that answered `record` could have been serving its version at the time."""
    at = record.sent_at + record.seconds
    current, previous, ended = initial, None, 0.0
    for switch in versions.get(record.routed_to or "", ()):
        if switch.at <= at:
            current, previous, ended = switch.version, current, switch.ended
    return record.model_version == current or (record.model_version == previous and at < ended + grace)


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
