"""`mct drill`: rehearse cloud outages against a local stack under load, and report what clients saw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from serving.drill.report import SLO, ScenarioReport
from serving.drill.scenarios import SCENARIOS
from toolkit.cli.console import console, format_metric, print_json, status_console
from toolkit.config import load_settings

__all__ = ["drill_command", "render_drill"]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render_drill(reports: list[ScenarioReport]) -> None:
    """One row per scenario: requests, failures by cause, answers per cloud, latency, detect and recover."""
    table = Table(
        "scenario",
        "sent",
        "ok",
        "failed (cause)",
        "answered by",
        "wrong version",
        "p50/p95/p99 ms in fault",
        "p50/p95/p99 ms outside",
        "detect",
        "recover",
        "SLO",
    )
    for report in reports:
        causes = ", ".join(f"{cause} {count}" for cause, count in sorted(report.failed_by_cause.items()))
        latency = report.latency_ms
        table.add_row(
            report.scenario,
            str(report.sent),
            str(report.succeeded),
            f"{report.failed}" + (f" ({causes})" if causes else ""),
            ", ".join(f"{cloud} {count}" for cloud, count in report.answered_by.items()),
            str(report.wrong_version),
            "/".join(format_metric(value, 1) for value in latency["inside_fault_window"].values()),
            "/".join(format_metric(value, 1) for value in latency["outside_fault_window"].values()),
            _seconds(report.detect_seconds),
            _seconds(report.recover_seconds),
            "[green]met[/]" if report.slo_met else "[red]missed: " + "; ".join(report.slo_missed) + "[/]",
        )
    console.print(table)
    for report in reports:
        notes = _notes(report)
        if notes:
            console.print(f"{report.scenario}: {notes}")


def _notes(report: ScenarioReport) -> str:
    """What a scenario found beyond the common columns: a router outage, a promotion's convergence."""
    notes = []
    if report.router_down_seconds is not None:
        notes.append(
            f"router down {report.router_down_seconds:.1f} s, {report.failed_while_router_down} failed meanwhile "
            "(not held to the SLO)"
        )
    for event in report.events:
        evidence = event.evidence or {}
        if "promoted" in evidence:
            missed = [cloud for cloud, version in evidence["published"].items() if version is None]
            notes.append(f"v{evidence['promoted']} published" + (f", not to {', '.join(missed)}" if missed else ""))
        elif event.verb == "storage-up":
            for item in evidence.values():
                found = [f"{cloud} {check['status']} v{check['version']}" for cloud, check in item["verify"].items()]
                notes.append("verify once storage is back: " + ", ".join(found))
    if report.converged is not None:
        notes.append(
            f"converged {report.converge_seconds:.1f} s after re-publish" if report.converged else "no convergence"
        )
    return "; ".join(notes)


def drill_command(
    model: Annotated[str | None, typer.Option(help="Registered model (default: the most recently promoted).")] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="; ".join(f"{name}: {item.description}" for name, item in SCENARIOS.items())
            + "; or all (default). Repeatable. storage-outage registers and promotes a copy of the champion.",
        ),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of load per scenario.")] = 30.0,
    rps: Annotated[float, typer.Option(help="Requests per second, sent on schedule (open loop).")] = 200.0,
    report: Annotated[Path | None, typer.Option(help="Where to write the JSON report (default: DATA/drill).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of the table.")] = False,
    slo_max_failed: Annotated[
        int, typer.Option(min=0, help="SLO: failed requests allowed while at least one cloud is healthy.")
    ] = 0,
    engine: Annotated[
        str, typer.Option(help="The router's engine: builtin or haproxy (see `mct route --engine`).")
    ] = "builtin",
    slo_p99_ms: Annotated[
        float | None, typer.Option(help="SLO: p99 latency outside the fault windows, in milliseconds (off).")
    ] = None,
) -> None:
    """Inject cloud outages into a local stack (a server per cloud and the router) under open-loop load.

    Starts (or reuses) the emulators, publishes the model's champion to every cloud, starts the servers in
    drill mode and the router, runs each scenario, and stops everything it started. Writes report.json and
    timeline.png in the data directory; exits 1 when an SLO is missed.
    """
    from serving.drill.runner import DrillOptions, report_document, run_drill

    options = DrillOptions(
        model=model,
        scenarios=scenario or ["all"],
        duration_seconds=duration,
        rps=rps,
        slo=SLO(max_failed=slo_max_failed, max_p99_ms=slo_p99_ms),
        engine=engine,
    )
    result = run_drill(load_settings(), options, say=status_console.print, report_path=report)
    if json_output:
        print_json(report_document(result, options))
    else:
        render_drill(result.reports)
        console.print(f"router engine {engine}; report {result.report_path}")
        console.print(f"timeline {result.timeline_path}")
    if not result.slo_met:
        raise typer.Exit(1)
