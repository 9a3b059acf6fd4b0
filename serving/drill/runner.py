"""Run a drill: emulators up (or reused), the model's champion published to every cloud, a server per cloud
in drill mode and the router started, each scenario run under open-loop load, and everything torn down.

Only processes the drill started are stopped, by PID: the servers and the router always, the emulators
only if the drill had to start them. SIGINT and SIGTERM end the drill through the same clean-up.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from serving.drill.load import RequestRecord, drive_load
from serving.drill.report import HEALTHY, SLO, ScenarioReport, StatusSample, build_report
from serving.drill.scenarios import Scenario, get_scenarios
from serving.drill.timeline import write_timeline
from serving.local_stack import LocalStack
from toolkit.clouds import cloud_stores, emulator_buckets
from toolkit.config import Settings
from toolkit.emulators import ensure_emulators, read_state, stop_emulators
from toolkit.errors import ToolkitError
from toolkit.publishing.export import export_bundle
from toolkit.publishing.publish import publish_bundle
from toolkit.tracking.promotion import alias_history
from toolkit.tracking.registry import list_models
from toolkit.tracking.store import TrackingStore, open_store

__all__ = ["DrillError", "DrillOptions", "DrillResult", "latest_promoted", "run_drill"]

ALIAS = "champion"
# Ten samples a second resolve time to detect and to recover well below the router's one-second checks.
STATUS_INTERVAL_SECONDS = 0.1
# A killed server restarts (imports, loads and verifies its bundle) and passes two health checks in a few
# seconds; on a loaded 2-core machine several times that. Beyond this the drill reports no recovery.
RECOVERY_TIMEOUT_SECONDS = 60.0
# A try that takes longer moves to another cloud: below the slow-one delay (2 s), far above an answer (ms).
ROUTER_PER_TRY_TIMEOUT_SECONDS = 1.0
# Every cloud carries a share when a fault hits: a latency-aware policy may already have moved the traffic
# off the cloud to be faulted (a restarted server starts slow), and the drill would then rehearse nothing.
ROUTER_POLICY = "round_robin"


class DrillError(ToolkitError):
    """The drill could not be set up (no model to drill with, a publish that failed)."""

    exit_code = 1


@dataclass(frozen=True)
class DrillOptions:
    """What to drill and how hard."""

    model: str | None = None
    scenarios: Sequence[str] = ("all",)
    duration_seconds: float = 30.0
    rps: float = 200.0
    slo: SLO = field(default_factory=SLO)

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0 or self.rps <= 0:
            raise DrillError("--duration and --rps must be positive")


@dataclass
class DrillResult:
    """The reports, where they were written, and every process the drill started (PID, start time)."""

    model: str
    version: str
    reports: list[ScenarioReport]
    report_path: Path
    timeline_path: Path
    processes: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def slo_met(self) -> bool:
        return all(report.slo_met for report in self.reports)


def latest_promoted(tracking: TrackingStore) -> str:
    """The model whose champion moved last; `DrillError` if no model has one."""
    moved = [
        (history[-1].at, summary.name)
        for summary in list_models(tracking)
        if ALIAS in summary.aliases and (history := alias_history(tracking, summary.name, ALIAS))
    ]
    if not moved:
        raise DrillError("no model has a champion to drill with: run `mct promote NAME VERSION` first")
    return max(moved)[1]


def run_drill(
    settings: Settings, options: DrillOptions, say: Callable[[str], None] = print, report_path: Path | None = None
) -> DrillResult:
    """Run the scenarios of `options` against a fresh local stack; write the JSON report and the timeline.

    Both go to DATA/drill (report.json, timeline.png) unless `report_path` names the report's file.
    """
    scenarios = get_scenarios(list(options.scenarios))
    tracking = open_store(settings)
    model = options.model or latest_promoted(tracking)
    directory = settings.home / "drill"
    report_path = report_path or directory / "report.json"
    timeline_path = directory / "timeline.png"
    recorded = read_state(settings.home)
    reuse = recorded is not None and all(recorded.health().values())
    with _interrupt_on_sigterm():
        emulators = ensure_emulators(settings.home, emulator_buckets(settings))
        processes = [(process.pid, process.started) for process in emulators.processes] if not reuse else []
        try:
            say("emulators " + ("reused" if reuse else "started"))
            stores = cloud_stores(settings)
            with tempfile.TemporaryDirectory(prefix="mct-drill-") as scratch:
                bundle = export_bundle(tracking, model, f"@{ALIAS}", Path(scratch))
                published = publish_bundle(bundle, stores)
            failed = [f"{item.cloud}: {item.error}" for item in published if not item.ok]
            if failed:
                raise DrillError(f"publishing {model} failed on {'; '.join(failed)}")
            version = bundle.manifest.version
            body = {
                "dataframe_split": {
                    "columns": bundle.manifest.features,
                    "data": [[0.0] * len(bundle.manifest.features)],
                }
            }
            say(f"published {model} v{version} to {', '.join(stores)}")
            token = secrets.token_urlsafe(24)
            stack = LocalStack(
                list(stores),
                directory / "logs",
                model=model,
                drill_mode=True,
                router_args=[
                    "--admin-token",
                    token,
                    "--per-try-timeout",
                    str(ROUTER_PER_TRY_TIMEOUT_SECONDS),
                    "--policy",
                    ROUTER_POLICY,
                ],
            )
            runs: list[tuple[ScenarioReport, list[RequestRecord]]] = []
            try:
                stack.start()
                processes += list(stack.pids().values())
                say(f"router {stack.router_url} -> " + ", ".join(f"{c} {u}" for c, u in stack.servers.items()))
                for scenario in scenarios:
                    say(f"scenario {scenario.name}: {scenario.description}")
                    records, samples = asyncio.run(_run_scenario(stack, scenario, options, body, token))
                    processes += [pid for pid in stack.pids().values() if pid not in processes]
                    start, end = scenario.window
                    report = build_report(
                        scenario=scenario.name,
                        description=scenario.description,
                        rps=options.rps,
                        duration_seconds=options.duration_seconds,
                        faulted=scenario.faulted_clouds(list(stores)),
                        window=(start * options.duration_seconds, end * options.duration_seconds),
                        model_version=version,
                        records=records,
                        samples=samples,
                        slo=options.slo,
                    )
                    runs.append((report, records))
            finally:
                processes += [pid for pid in stack.pids().values() if pid not in processes]
                stack.stop()
        finally:
            if not reuse:
                stop_emulators(settings.home)
    reports = [report for report, _ in runs]
    result = DrillResult(model, version, reports, report_path, timeline_path, processes)
    write_timeline(runs, timeline_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report_document(result, options), indent=2) + "\n")
    return result


def report_document(result: DrillResult, options: DrillOptions) -> dict[str, Any]:
    """The JSON report of a drill."""
    return {
        "model": result.model,
        "version": result.version,
        "rps": options.rps,
        "duration_seconds": options.duration_seconds,
        "slo": {"max_failed": options.slo.max_failed, "max_p99_ms": options.slo.max_p99_ms},
        "slo_met": result.slo_met,
        "timeline": str(result.timeline_path),
        "scenarios": [report.to_json() for report in result.reports],
    }


class StackFaults:
    """The faults a scenario injects, on the servers of a `LocalStack` (the `FaultTarget` protocol)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def kill(self, cloud: str) -> None:
        self.stack.kill(cloud)

    def restart(self, cloud: str) -> None:
        self.stack.restart(cloud, wait=False)

    def pause(self, cloud: str) -> None:
        self.stack.signal(f"server-{cloud}", signal.SIGSTOP)

    def resume(self, cloud: str) -> None:
        self.stack.signal(f"server-{cloud}", signal.SIGCONT)

    def inject(self, cloud: str, errors: bool, delay_seconds: float) -> None:
        body = json.dumps({"errors": errors, "delay_seconds": delay_seconds}).encode()
        request = urllib.request.Request(
            self.stack.servers[cloud] + "/drill/fault",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        with opener.open(request, timeout=5):
            pass


async def _run_scenario(
    stack: LocalStack, scenario: Scenario, options: DrillOptions, body: dict[str, Any], token: str
) -> tuple[list[RequestRecord], list[StatusSample]]:
    """Load, faults on schedule and status samples together; then wait until every cloud is back."""
    clouds = list(stack.servers)
    faulted = scenario.faulted_clouds(clouds)
    target = StackFaults(stack)
    start = time.monotonic()
    samples: list[StatusSample] = []
    done = asyncio.Event()

    async def act() -> None:
        for action in scenario.actions:
            await asyncio.sleep(max(0.0, start + action.at * options.duration_seconds - time.monotonic()))
            await asyncio.to_thread(action.apply, target, faulted)

    sampler = asyncio.create_task(_sample(stack.router_url, token, start, samples, done))
    try:
        records, _ = await asyncio.gather(
            drive_load(stack.router_url + "/invocations", body, options.rps, options.duration_seconds, start), act()
        )
        deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not _all_healthy(samples, clouds):
            await asyncio.sleep(STATUS_INTERVAL_SECONDS)
    finally:
        done.set()
        await sampler
    return records, samples


async def _sample(url: str, token: str, start: float, samples: list[StatusSample], done: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers, trust_env=False) as session:
        while not done.is_set():
            at = time.monotonic() - start
            try:
                async with session.get(url + "/router/status") as response:
                    document = await response.json()
                samples.append(StatusSample(at, {item["cloud"]: item["state"] for item in document["backends"]}))
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                pass
            await asyncio.sleep(STATUS_INTERVAL_SECONDS)


def _all_healthy(samples: Sequence[StatusSample], clouds: Sequence[str]) -> bool:
    return bool(samples) and all(samples[-1].states.get(cloud) == HEALTHY for cloud in clouds)


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the drill runs, so that both go through its clean-up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
