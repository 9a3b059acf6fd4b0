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
from serving.drill.report import (
    HEALTHY,
    SLO,
    DrillEvent,
    ScenarioReport,
    StatusSample,
    VersionSwitch,
    build_report,
)
from serving.drill.scenarios import Evidence, Scenario, get_scenarios
from serving.drill.timeline import write_timeline
from serving.local_stack import LocalStack
from toolkit.clouds import cloud_stores, emulator_buckets, emulator_of
from toolkit.config import Settings
from toolkit.emulators import EMULATORS, ensure_emulators, read_state, restart_emulator, stop_emulator, stop_emulators
from toolkit.errors import ConfigError, ToolkitError
from toolkit.publishing.export import ExportedBundle, export_bundle
from toolkit.publishing.publish import publish_bundle
from toolkit.publishing.verify import verify_clouds
from toolkit.storage import ObjectStore
from toolkit.tracking.promotion import alias_history, promote
from toolkit.tracking.registry import list_models, register_copy
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
ENGINES = ("builtin", "haproxy")
# The servers look for a new pointer this often; loading and verifying a bundle takes well under a second
# idle, a few seconds on a loaded 2-core machine. Until then a cloud may still answer with the old version.
SERVER_POLL_SECONDS = 1.0
RELOAD_GRACE_SECONDS = SERVER_POLL_SECONDS + 4.0


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
    engine: str = "builtin"

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0 or self.rps <= 0:
            raise DrillError("--duration and --rps must be positive")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown router engine {self.engine!r}: choose {' or '.join(ENGINES)}")


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
    if options.engine == "haproxy":
        from serving.router.haproxy.engine import find_haproxy

        find_haproxy()  # before anything starts: one line on how to install it
    tracking = open_store(settings)
    model = options.model or latest_promoted(tracking)
    directory = settings.home / "drill"
    report_path = report_path or directory / "report.json"
    timeline_path = directory / "timeline.png"
    recorded = read_state(settings.home)
    reuse = recorded is not None and all(recorded.health().values())
    runs: list[tuple[ScenarioReport, list[RequestRecord]]] = []
    with _interrupt_on_sigterm():
        emulators = ensure_emulators(settings.home, emulator_buckets(settings))
        processes = [(process.pid, process.started) for process in emulators.processes] if not reuse else []
        try:
            say("emulators " + ("reused" if reuse else "started"))
            stores = cloud_stores(settings)
            bundle = _publish_champion(tracking, model, stores)
            say(f"published {model} v{bundle.manifest.version} to {', '.join(stores)}")
            stack = LocalStack(
                list(stores),
                directory / "logs",
                model=model,
                poll_seconds=SERVER_POLL_SECONDS,
                drill_mode=True,
                admin_token=secrets.token_urlsafe(24),
                engine=options.engine,
                router_args=[
                    "--per-try-timeout",
                    str(ROUTER_PER_TRY_TIMEOUT_SECONDS),
                    "--policy",
                    ROUTER_POLICY,
                    "--reuse-port",
                ],
            )
            target = DrillTarget(stack, settings, tracking, model, bundle.manifest.version, stores, say)
            features = bundle.manifest.features
            try:
                stack.start()
                say(
                    f"router ({options.engine}) {stack.router_url} -> "
                    + ", ".join(f"{c} {u}" for c, u in stack.servers.items())
                )
                for scenario in scenarios:
                    say(f"scenario {scenario.name}: {scenario.description}")
                    runs.append(_run_scenario(stack, target, scenario, options, features))
            finally:
                stack.stop()
                if reuse:
                    target.restore_storage()  # the emulators were running before the drill: leave them so
                processes += stack.started
                processes += target.restarted_emulators if not reuse else []
        finally:
            if not reuse:
                stop_emulators(settings.home)
    reports = [report for report, _ in runs]
    result = DrillResult(model, target.version, reports, report_path, timeline_path, processes)
    write_timeline(runs, timeline_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report_document(result, options), indent=2) + "\n")
    return result


def report_document(result: DrillResult, options: DrillOptions) -> dict[str, Any]:
    """The JSON report of a drill."""
    return {
        "model": result.model,
        "version": result.version,
        "engine": options.engine,
        "rps": options.rps,
        "duration_seconds": options.duration_seconds,
        "slo": {"max_failed": options.slo.max_failed, "max_p99_ms": options.slo.max_p99_ms},
        "slo_met": result.slo_met,
        "timeline": str(result.timeline_path),
        "scenarios": [report.to_json() for report in result.reports],
    }


def _publish_champion(tracking: TrackingStore, model: str, stores: dict[str, ObjectStore]) -> ExportedBundle:
    """Publish the champion of `model` to every cloud; `DrillError` if a cloud refuses it."""
    with tempfile.TemporaryDirectory(prefix="mct-drill-") as scratch:
        bundle = export_bundle(tracking, model, f"@{ALIAS}", Path(scratch))
        published = publish_bundle(bundle, stores)
    failed = [f"{item.cloud}: {item.error}" for item in published if not item.ok]
    if failed:
        raise DrillError(f"publishing {model} failed on {'; '.join(failed)}")
    return bundle


class DrillTarget:
    """What the scenarios act on (the `FaultTarget` protocol): a `LocalStack`, the emulators, the registry.

    `version` is the version the clouds are to serve; a promotion moves it. The actions on the storage,
    the registry and the router return what they found out, for the report.
    """

    def __init__(
        self,
        stack: LocalStack,
        settings: Settings,
        tracking: TrackingStore,
        model: str,
        version: str,
        stores: dict[str, ObjectStore],
        say: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.settings = settings
        self.tracking = tracking
        self.model = model
        self.version = version
        self.stores = stores
        self.say = say
        self.restarted_emulators: list[tuple[int, int | None]] = []
        self._storage_down: set[str] = set()

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

    def hand_over_router(self) -> Evidence:
        old = self.stack.pids()["router"][0]
        if self.stack.engine == "haproxy":  # HAProxy's own graceful upgrade: a master-worker reload
            self.stack.reload_router()
            return {"reloaded": True, "pid": old}
        self.stack.hand_over_router()
        return {"old_pid": old, "new_pid": self.stack.pids()["router"][0]}

    def kill_router(self) -> Evidence:
        old = self.stack.pids()["router"][0]
        self.stack.kill_router()
        return {"old_pid": old, "new_pid": self.stack.pids()["router"][0]}

    def storage_down(self, cloud: str) -> Evidence:
        process = stop_emulator(self.settings.home, self._emulator(cloud))
        self._storage_down.add(cloud)
        self.say(f"  {cloud} storage down ({process.program} stopped)")
        return {"emulator": process.program}

    def storage_up(self, cloud: str) -> Evidence:
        process = restart_emulator(self.settings.home, self._emulator(cloud), emulator_buckets(self.settings))
        self._storage_down.discard(cloud)
        self.restarted_emulators.append((process.pid, process.started))
        self.say(f"  {cloud} storage back ({process.program} restarted)")
        return {"emulator": process.program, "verify": self._verify()}

    def restore_storage(self) -> None:
        """Bring back any storage a scenario took down (after an interruption)."""
        for cloud in sorted(self._storage_down):
            self.storage_up(cloud)

    def promote(self) -> Evidence:
        """Register a copy of the champion, promote it through the gate, publish it to every cloud."""
        previous = self.version
        candidate = register_copy(
            self.tracking, self.model, previous, f"copy of v{previous} registered by the storage-outage drill"
        )
        promote(self.tracking, self.model, candidate, self.settings.promotion, reason="storage-outage drill")
        self.version = candidate
        self.say(f"  promoted {self.model} v{candidate} (a copy of v{previous})")
        return {"promoted": candidate, "previous": previous, **self._publish()}

    def republish(self) -> Evidence:
        return self._publish()

    def _publish(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="mct-drill-") as scratch:
            bundle = export_bundle(self.tracking, self.model, f"@{ALIAS}", Path(scratch))
            results = publish_bundle(bundle, self.stores)
        published = {item.cloud: self.version if item.ok else None for item in results}
        self.say("  published: " + ", ".join(f"{cloud} {'ok' if v else 'FAILED'}" for cloud, v in published.items()))
        return {"published": published, "verify": self._verify()}

    def _verify(self) -> dict[str, dict[str, Any]]:
        return {
            item.cloud: {"status": item.status, "version": item.version}
            for item in verify_clouds(self.stores, self.model, ALIAS)
        }

    def _emulator(self, cloud: str) -> str:
        emulator = emulator_of(self.settings, cloud)
        if emulator is None:
            raise DrillError(f"cloud {cloud} is not emulated: a storage outage is only rehearsed on the emulators")
        return emulator


def storage_candidates(settings: Settings, clouds: Sequence[str]) -> list[str]:
    """Clouds whose emulator keeps its objects across a restart (moto does not): storage outages hit these."""
    keeps = {emulator.cloud for emulator in EMULATORS if emulator.keeps_data}
    return [cloud for cloud in clouds if emulator_of(settings, cloud) in keeps]


def _run_scenario(
    stack: LocalStack, target: DrillTarget, scenario: Scenario, options: DrillOptions, features: list[str]
) -> tuple[ScenarioReport, list[RequestRecord]]:
    """Run one scenario under load and build its report."""
    clouds = list(stack.servers)
    candidates = storage_candidates(target.settings, clouds) if scenario.target == "storage" else clouds
    faulted = scenario.faulted_clouds(candidates)
    if len(faulted) < scenario.faulted:
        raise DrillError(f"scenario {scenario.name} needs {scenario.faulted} cloud(s) it can fault; it has {faulted}")
    version = target.version
    # An all-zeros row: the answer does not matter, only who gives it, how fast, and of which version.
    body = {"dataframe_split": {"columns": features, "data": [[0.0] * len(features)]}}
    records, samples, events, converge = asyncio.run(_drive(stack, target, scenario, faulted, options, body))
    report = build_report(
        scenario=scenario.name,
        description=scenario.description,
        rps=options.rps,
        duration_seconds=options.duration_seconds,
        target=scenario.target,
        faulted=faulted,
        events=events,
        model_version=version,
        records=records,
        samples=samples,
        slo=options.slo,
        versions=_version_switches(events),
        reload_grace_seconds=RELOAD_GRACE_SECONDS,
        router_down=scenario.router_down,
        converge_seconds=converge,
    )
    return report, records


def _version_switches(events: Sequence[DrillEvent]) -> dict[str, list[VersionSwitch]]:
    """Each cloud's pointer moves, from the publishes the events record."""
    switches: dict[str, list[VersionSwitch]] = {}
    for event in events:
        for cloud, version in ((event.evidence or {}).get("published") or {}).items():
            if version is not None:
                switches.setdefault(cloud, []).append(VersionSwitch(event.at, event.ended, version))
    return switches


async def _drive(
    stack: LocalStack,
    target: DrillTarget,
    scenario: Scenario,
    faulted: list[str],
    options: DrillOptions,
    body: dict[str, Any],
) -> tuple[list[RequestRecord], list[StatusSample], list[DrillEvent], float | None]:
    """Load, faults on schedule and status samples together; then wait until every cloud is back (and, after
    a promotion, serves the promoted version: the seconds that took after the last action, or None)."""
    clouds = list(stack.servers)
    start = time.monotonic()
    samples: list[StatusSample] = []
    events: list[DrillEvent] = []
    done = asyncio.Event()
    converge: list[float] = []

    async def act() -> None:
        for action in scenario.actions:
            await asyncio.sleep(max(0.0, start + action.at * options.duration_seconds - time.monotonic()))
            began = time.monotonic() - start
            evidence = await asyncio.to_thread(action.apply, target, faulted)
            events.append(DrillEvent(action.verb, round(began, 3), round(time.monotonic() - start, 3), evidence))
        if scenario.promotes:  # watch, while the load goes on, for every server to load the promoted version
            deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                if await asyncio.to_thread(_all_serve, stack, target.version):
                    converge.append(round(time.monotonic() - start - events[-1].ended, 3))
                    return
                await asyncio.sleep(STATUS_INTERVAL_SECONDS)

    sampler = asyncio.create_task(_sample(stack.router_url, stack.admin_token or "", start, samples, done))
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
    return records, samples, events, converge[0] if converge else None


def _all_serve(stack: LocalStack, version: str) -> bool:
    """Whether every server of the stack is ready with `version` (by its readiness answer)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for url in stack.servers.values():
        try:
            with opener.open(url + "/v2/health/ready", timeout=1) as response:
                if str(json.loads(response.read()).get("version")) != version:
                    return False
        except (OSError, ValueError):
            return False
    return True


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
