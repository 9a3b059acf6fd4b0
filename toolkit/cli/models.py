"""`mct models list|show`: what the registry holds."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli.console import console, format_metric, print_json
from toolkit.config import load_settings

__all__ = ["models_app"]

models_app = typer.Typer(help="List registered models and their versions.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@models_app.command("list")
def list_command(json_output: JsonFlag = False) -> None:
    """Every registered model with its version count and aliases."""
    from toolkit.tracking.registry import list_models
    from toolkit.tracking.store import open_store

    models = list_models(open_store(load_settings()))
    if json_output:
        print_json([asdict(model) for model in models])
        return
    if not models:
        console.print("no registered models yet: `mct train --dataset breast_cancer --register NAME` makes one")
        return
    table = Table("model", "versions", "latest", "aliases")
    for model in models:
        aliases = ", ".join(f"{alias} -> v{version}" for alias, version in sorted(model.aliases.items()))
        table.add_row(model.name, str(model.versions), model.latest or "-", aliases or "-")
    console.print(table)


@models_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Alias whose history to show.")] = "champion",
    json_output: JsonFlag = False,
) -> None:
    """The versions of one model with their key metrics, and the history of an alias."""
    from toolkit.tracking.promotion import alias_history
    from toolkit.tracking.registry import KEY_METRICS, list_versions
    from toolkit.tracking.store import open_store

    store = open_store(load_settings())
    versions = list_versions(store, name)
    history = alias_history(store, name, alias)
    if json_output:
        print_json(
            {"name": name, "versions": [asdict(v) for v in versions], "history": {alias: [asdict(e) for e in history]}}
        )
        return
    shown = [metric for metric in KEY_METRICS if any(metric in version.metrics for version in versions)]
    table = Table("version", "created (UTC)", "aliases", "dataset", *shown, title=name, title_justify="left")
    for version in versions:
        created = datetime.fromtimestamp(version.created_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        forced = " (forced)" if "mct.forced_promotion" in version.tags else ""
        table.add_row(
            version.version,
            created,
            ", ".join(version.aliases) + forced or "-",
            version.dataset,
            *(format_metric(version.metrics.get(metric), digits=3) for metric in shown),
        )
    console.print(table)
    if history:
        console.print(f"{alias} history (oldest first):")
        for event in history:
            note = f" forced: {event.reason}" if event.forced else ""
            console.print(f"  {event.at}  {event.action:<8} -> v{event.version}{note}")
