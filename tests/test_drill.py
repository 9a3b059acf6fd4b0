"""`mct drill` end to end: real emulators, servers in drill mode and the router, short drills at a low rate.

One drill runs every scenario (5 s each at 40 requests per second) and its report is checked: no failed
request while a cloud was healthy, answers from the surviving clouds, the faulted cloud detected and back
in rotation; a storage outage during a promotion that leaves one cloud behind until a re-publish; a
graceful router hand-over without a failed request and a hard router kill whose failures all fall in the
gap; and none of the drill's processes left. The router checks health every 0.2 s and ejects for
1 s (MCT_ROUTER__* variables the drill's router inherits), so that recoveries take seconds, not tens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.drill.report import ScenarioReport
from serving.drill.runner import DrillOptions, DrillResult, run_drill
from serving.drill.scenarios import SCENARIOS
from tests.conftest import Cli
from tests.server_fixtures import register_versions
from toolkit.config import load_settings
from toolkit.processes import is_running, start_time
from toolkit.tracking.store import open_store

ROUTER_ENV = {
    "MCT_ROUTER__HEALTH_INTERVAL_SECONDS": "0.2",
    "MCT_ROUTER__HEALTH_TIMEOUT_SECONDS": "0.2",
    "MCT_ROUTER__EJECT_BASE_SECONDS": "1.0",
    "MCT_ROUTER__EJECT_MAX_SECONDS": "4.0",
}
DURATION_SECONDS = 5.0
RPS = 40.0


@pytest.fixture(scope="module")
def drill_model(data_home: Path) -> Iterator[str]:
    """A model with a champion in the session's registry, and the fast router settings in the environment."""
    saved = {name: os.environ.get(name) for name in ROUTER_ENV}
    os.environ.update(ROUTER_ENV)
    settings = load_settings()
    model = "drill-model"
    register_versions(open_store(settings), settings, model, count=1)
    yield model
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def drill(drill_model: str) -> DrillResult:
    options = DrillOptions(model=drill_model, scenarios=list(SCENARIOS), duration_seconds=DURATION_SECONDS, rps=RPS)
    return run_drill(load_settings(), options, say=lambda _: None)


@pytest.mark.parametrize("name", ["kill-one", "errors-one", "slow-one", "hang-one", "kill-two"])
def test_no_request_fails_while_a_cloud_is_healthy(drill: DrillResult, name: str) -> None:
    report = _report(drill, name)
    assert report.sent == int(RPS * DURATION_SECONDS)
    assert report.failed == 0, report.failed_by_cause
    assert report.slo_met
    assert report.wrong_version == 0
    assert report.detect_seconds is not None, "the router never took the faulted cloud out of rotation"
    assert report.recover_seconds is not None, "the faulted cloud never came back"
    start, end = report.fault_window_seconds
    assert report.latency_ms["inside_fault_window"]["p50"] is not None
    # Answered only by clouds that were up: the survivors carry the load.
    survivors = {"aws", "gcp", "azure"} - set(report.faulted)
    assert survivors & set(report.answered_by), report.answered_by
    assert set(report.answered_by) <= {"aws", "gcp", "azure"}
    assert end > start


def test_a_storage_outage_during_a_promotion_holds_one_cloud_back_until_a_re_publish(drill: DrillResult) -> None:
    report = _report(drill, "storage-outage")
    assert report.failed == 0 and report.wrong_version == 0 and report.slo_met, report.slo_missed
    assert report.faulted == ["azure"], "the last cloud whose emulator keeps its data on a restart"
    events = {event.verb: event.evidence or {} for event in report.events}
    promotion = events["promote"]
    old, new = promotion["previous"], promotion["promoted"]
    assert int(new) > int(old)
    assert promotion["published"] == {"aws": new, "gcp": new, "azure": None}
    assert _verified(promotion) == {"aws": ("OK", new), "gcp": ("OK", new), "azure": ("UNREACHABLE", None)}
    assert _verified(events["storage-up"]["azure"]) == {"aws": ("OK", new), "gcp": ("OK", new), "azure": ("DRIFT", old)}
    assert _verified(events["republish"]) == {cloud: ("OK", new) for cloud in ("aws", "gcp", "azure")}
    assert report.converged and report.converge_seconds is not None, "azure's server never loaded the new version"
    # Every cloud answered with the old version before the promotion; azure kept it through the outage.
    assert report.answered_by_version["azure"].get(old, 0) > report.answered_by_version["aws"].get(old, 0)
    assert new in report.answered_by_version["aws"] and new in report.answered_by_version["gcp"]
    assert drill.version == new


def test_a_graceful_router_hand_over_fails_no_request(drill: DrillResult) -> None:
    report = _report(drill, "router-restart")
    assert report.failed == 0, report.failed_by_cause
    assert report.slo_met and report.faulted == ["router"]
    (event,) = report.events
    assert event.evidence is not None and event.evidence["old_pid"] != event.evidence["new_pid"]
    assert report.router_down_seconds is None


def test_a_hard_router_kill_is_reported_with_the_errors_of_its_gap(drill: DrillResult) -> None:
    report = _report(drill, "router-kill")
    assert report.router_down_seconds is not None and report.router_down_seconds > 0
    # At 40 requests a second, a gap of a few hundred milliseconds fails some requests, all of them in it.
    assert report.failed_while_router_down == report.failed > 0, report.failed_by_cause
    assert set(report.failed_by_cause) <= {"connect", "disconnected", "reset"}, report.failed_by_cause
    assert report.slo_met, "failures while the router was down are reported, not held to the SLO"


def _report(drill: DrillResult, name: str) -> ScenarioReport:
    return next(report for report in drill.reports if report.scenario == name)


def _verified(evidence: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {cloud: (item["status"], item["version"]) for cloud, item in evidence["verify"].items()}


@pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="HAProxy is not installed (`make setup` installs it as root)"
)
def test_the_haproxy_engine_passes_the_same_drills(drill_model: str, tmp_path: Path) -> None:
    scenarios = ["kill-one", "hang-one", "errors-one", "kill-two", "router-restart"]  # router-kill comes along
    options = DrillOptions(
        model=drill_model, scenarios=scenarios, duration_seconds=DURATION_SECONDS, rps=RPS, engine="haproxy"
    )
    result = run_drill(load_settings(), options, say=lambda _: None, report_path=tmp_path / "report.json")
    document = json.loads(result.report_path.read_text())
    assert document["engine"] == "haproxy" and document["slo_met"], [r.slo_missed for r in result.reports]
    for report in result.reports:
        if report.scenario == "router-kill":
            assert report.failed == report.failed_while_router_down
        else:
            assert report.failed == 0, (report.scenario, report.failed_by_cause)
    reload = _report(result, "router-restart").events[0].evidence
    assert reload is not None and reload["reloaded"] is True, "HAProxy upgrades by a master-worker reload"
    assert [pid for pid, started in result.processes if is_running(pid, started)] == []


def test_report_and_timeline_written(drill: DrillResult) -> None:
    document = json.loads(drill.report_path.read_text())
    assert [item["scenario"] for item in document["scenarios"]] == list(SCENARIOS)
    assert document["slo_met"] is True
    assert drill.timeline_path.read_bytes().startswith(b"\x89PNG")


def test_teardown_leaves_no_process(drill: DrillResult) -> None:
    # Three servers, two restarted by kill-one and kill-two's two, three routers (two restarts), three emulators
    # and Azurite once more (storage-outage).
    assert len(drill.processes) >= 3 + 3 + 3 + 3 + 1
    assert [pid for pid, started in drill.processes if is_running(pid, started)] == []


def test_an_impossibly_tight_slo_exits_non_zero(drill_model: str, mct: Cli, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = mct(
        "drill",
        "--model",
        drill_model,
        "--scenario",
        "errors-one",
        "--duration",
        "2",
        "--rps",
        "20",
        "--slo-p99-ms",
        "0.001",
        "--report",
        str(report),
    )
    assert result.exit_code == 1, result.output
    assert "missed" in result.output
    assert json.loads(report.read_text())["slo_met"] is False


def test_an_unknown_scenario_is_refused(mct: Cli) -> None:
    result = mct("drill", "--scenario", "flood")
    assert result.exit_code == 2
    assert "unknown scenario flood" in result.stderr


def _children(parent: int) -> list[tuple[int, int | None]]:
    """(pid, start time) of the live processes whose parent is `parent`."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pid = int(stat.parent.name)
            children.append((pid, start_time(pid)))
    return children


def test_ctrl_c_in_the_middle_stops_everything_the_drill_started(drill_model: str, data_home: Path) -> None:
    command = [sys.executable, "-m", "toolkit", "drill", "--model", drill_model, "--scenario", "kill-one"]
    env = {**os.environ, "MCT_HOME": str(data_home)}
    drill = subprocess.Popen(
        [*command, "--duration", "30", "--rps", "20"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    started: list[tuple[int, int | None]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(started) < 4:  # three servers and the router
        time.sleep(0.5)
        started = [child for child in _children(drill.pid) if child[1] is not None]
    assert len(started) >= 4, "the drill did not start its servers and router in time"
    time.sleep(2)  # well inside the 30 s of load
    drill.send_signal(signal.SIGINT)
    drill.wait(timeout=60)
    assert drill.returncode != 0
    assert [pid for pid, begun in started if is_running(pid, begun)] == []
