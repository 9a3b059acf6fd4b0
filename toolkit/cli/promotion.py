"""`mct promote` and `mct rollback`: move an alias behind the quality gate, or back."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli.console import console, print_json
from toolkit.config import load_settings

if TYPE_CHECKING:
    from toolkit.tracking.promotion import PromotionOutcome

__all__ = ["promote_command", "render_outcome", "rollback_command"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number, 'latest' or '@alias'.")],
    alias: Annotated[str, typer.Option(help="Alias to point at the version.")] = "champion",
    min_auc: Annotated[float | None, typer.Option(help="Minimum holdout ROC AUC (overrides the config).")] = None,
    tolerance: Annotated[float | None, typer.Option(help="How far below the champion the candidate may score.")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses; recorded on the version.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why --force was needed (kept in the registry).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Point an alias (default champion) at a version if it passes the quality gate.

    The gate: holdout metrics at or above the configured minimums, and, if the alias already points at a
    version, a score no worse than that champion's (within the tolerance) on holdout rows neither model
    trained on. Exit code 1 when the gate refuses.
    """
    from toolkit.tracking.promotion import promote
    from toolkit.tracking.store import open_store

    settings = load_settings()
    policy = settings.promotion
    if min_auc is not None:
        policy = policy.model_copy(update={"min_metrics": {**policy.min_metrics, "roc_auc": min_auc}})
    if tolerance is not None:
        policy = policy.model_copy(update={"tolerance": tolerance})
    outcome = promote(open_store(settings), name, version, policy, alias=alias, force=force, reason=reason)
    if json_output:
        print_json(asdict(outcome))
    else:
        render_outcome(outcome)


def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    json_output: JsonFlag = False,
) -> None:
    """Point the alias back at the version it held before the current one."""
    from toolkit.tracking.promotion import rollback
    from toolkit.tracking.store import open_store

    outcome = rollback(open_store(load_settings()), name, alias)
    if json_output:
        print_json(asdict(outcome))
    else:
        console.print(f"{outcome.name}: {outcome.alias} rolled back from v{outcome.previous} to v{outcome.version}")
        console.print(f"move the clouds back too: mct publish {outcome.name}@{outcome.alias}")


def render_outcome(outcome: PromotionOutcome) -> None:
    """Describe a promotion: the gate's checks and what moved."""
    for check in outcome.checks:
        mark = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        console.print(f"  {mark} {check.name}: {check.detail}")
    if not outcome.changed:
        console.print(f"{outcome.name}: {outcome.alias} already points at v{outcome.version}; nothing to do")
        return
    before = f"v{outcome.previous}" if outcome.previous else "nothing"
    forced = (
        " [yellow](forced past the gate)[/]" if outcome.forced and any(not c.passed for c in outcome.checks) else ""
    )
    console.print(f"[green]promoted[/] {outcome.name} v{outcome.version} to {outcome.alias} (was {before}){forced}")
