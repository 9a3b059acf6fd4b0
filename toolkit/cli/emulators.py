"""`mct emulators up|down|status`: the local S3, GCS and Azure Blob emulators."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from toolkit.cli.console import console, print_json
from toolkit.clouds import emulator_buckets
from toolkit.config import load_settings
from toolkit.emulators import EmulatorSet, ensure_emulators, read_state, state_file, stop_emulators

__all__ = ["emulators_app"]

emulators_app = typer.Typer(help="Start, check and stop the local cloud storage emulators.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@emulators_app.command("up")
def up_command(json_output: JsonFlag = False) -> None:
    """Start the emulators (or reuse the healthy running ones) and create the configured buckets."""
    settings = load_settings()
    emulators = ensure_emulators(settings.home, emulator_buckets(settings))
    _show(emulators, emulators.health(), state_file(settings.home), json_output)


@emulators_app.command("status")
def status_command(json_output: JsonFlag = False) -> None:
    """Probe each recorded emulator; exit code 1 if any of them is down."""
    home = load_settings().home
    emulators = read_state(home)
    if emulators is None:
        if json_output:
            print_json({"state_file": None, "emulators": []})
        else:
            console.print("no emulators recorded: `mct emulators up` starts them")
        return
    health = emulators.health()
    _show(emulators, health, state_file(home), json_output)
    if not all(health.values()):
        if not json_output:
            console.print("an emulator is down: `mct emulators up` restarts the set")
        raise typer.Exit(1)


@emulators_app.command("down")
def down_command() -> None:
    """Stop exactly the emulator processes that `up` recorded, and forget them."""
    stopped = stop_emulators(load_settings().home)
    if stopped is None:
        console.print("no emulators were recorded as running: nothing to stop")
        return
    pids = ", ".join(f"{process.program} (pid {process.pid})" for process in stopped.processes)
    console.print(f"stopped {pids}")


def _show(emulators: EmulatorSet, health: dict[str, bool], path: Path, json_output: bool) -> None:
    rows: list[dict[str, Any]] = [
        {"cloud": p.cloud, "program": p.program, "endpoint": p.url, "pid": p.pid, "healthy": health[p.cloud]}
        for p in emulators.processes
    ]
    if json_output:
        print_json({"state_file": str(path), "endpoints": asdict(emulators.endpoints), "emulators": rows})
        return
    table = Table("emulator", "endpoint", "pid", "health")
    for row in rows:
        health_text = "[green]up[/green]" if row["healthy"] else "[red]down[/red]"
        table.add_row(f"{row['cloud']} ({row['program']})", row["endpoint"], str(row["pid"]), health_text)
    console.print(table)
    console.print(f"state: {path}")
