"""`mct demo`: the main job end to end on the embedded defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli.console import console
from toolkit.cli.promotion import render_outcome
from toolkit.cli.train import render_training, run_training
from toolkit.config import load_settings
from toolkit.data import load_dataset
from toolkit.tracking.promotion import promote
from toolkit.tracking.store import open_store
from toolkit.training.options import build_options

__all__ = ["demo_command"]


def demo_command(
    model: Annotated[str, typer.Option(help="Registered model name to use.")] = "breast_cancer",
) -> None:
    """Train on breast_cancer, register the model, and promote it to champion behind the gate."""
    settings = load_settings()
    console.rule("1/3 train on breast_cancer")
    data = load_dataset("breast_cancer")
    options = build_options(
        seed=settings.training.seed, cv_folds=settings.training.cv_folds, n_jobs=settings.training.n_jobs
    )
    result, logged = run_training(settings, data, options, register=model)
    render_training(result, logged)
    console.rule(f"2/3 registered {model} v{logged.version}")
    console.rule("3/3 promote to champion")
    outcome = promote(open_store(settings), model, str(logged.version), settings.promotion)
    render_outcome(outcome)
    console.print()
    console.print(f"holdout ROC AUC {result.card.metrics['roc_auc']:.4f}; tracking store in {settings.home}")
    console.print(f"next: `mct models show {model}`, `mct rollback {model}`, `mct train --help`")
