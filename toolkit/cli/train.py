"""`mct train`: fit, evaluate, log and optionally register a logistic-regression pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from toolkit.config import Settings, load_settings
from toolkit.data import BUILTIN_DATASETS, load_dataset
from toolkit.errors import ConfigError
from toolkit.training import options as opts

if TYPE_CHECKING:  # MLflow, scikit-learn and skl2onnx load when a command needs them, not for --help
    from toolkit.tracking.runs import LoggedRun
    from toolkit.training.trainer import TrainingResult

__all__ = ["render_training", "train_command", "training_document"]


def train_command(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help=f"Built-in ({', '.join(BUILTIN_DATASETS)}) or a .csv/.parquet path.")
    ],
    target: Annotated[str | None, typer.Option(help="Target column of a data file.")] = None,
    time_column: Annotated[
        str | None,
        typer.Option(help="Order rows by this column: the holdout is the latest rows, CV splits move forward in time."),
    ] = None,
    imputer: Annotated[opts.Imputer, typer.Option(help="Missing numeric values.")] = "median",
    scaler: Annotated[opts.Scaler, typer.Option(help="robust resists outliers; minmax for chi2.")] = "standard",
    select: Annotated[opts.Selector, typer.Option(help="Feature selection or reduction.")] = "none",
    kbest_score: Annotated[opts.KBestScore, typer.Option(help="Score of --select kbest.")] = "anova",
    imbalance: Annotated[
        opts.Imbalance, typer.Option(help="Class imbalance handling (resampling on training folds only).")
    ] = "none",
    penalty: Annotated[opts.Penalty, typer.Option()] = "l2",
    solver: Annotated[opts.Solver, typer.Option(help="auto picks a solver valid for the penalty.")] = "auto",
    multiclass: Annotated[opts.Multiclass, typer.Option(help="Multiclass strategy.")] = "multinomial",
    search: Annotated[opts.Search, typer.Option()] = "grid",
    iterations: Annotated[int | None, typer.Option(help="Candidates drawn by --search random.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Override the search space: NAME=V1,V2 (repeatable); see below."),
    ] = None,
    cv: Annotated[int | None, typer.Option(help="Cross-validation folds.")] = None,
    test_size: Annotated[float | None, typer.Option(help="Holdout fraction, split off before any search.")] = None,
    scoring: Annotated[
        str | None, typer.Option(help="Search metric (default roc_auc, or f1_macro for multiclass).")
    ] = None,
    threshold: Annotated[str, typer.Option(help="Binary decision threshold: f1, youden, or a probability.")] = "f1",
    max_iter: Annotated[int, typer.Option(help="Iteration limit of the solver.")] = 2000,
    seed: Annotated[int | None, typer.Option(help="Random seed of splits and models.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Parallel fits (-1: every core).")] = None,
    register: Annotated[str | None, typer.Option(help="Register the model under this name.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON document instead of tables.")] = False,
) -> None:
    """Train a leak-free logistic-regression pipeline, evaluate it on a holdout and log it to MLflow."""
    settings = load_settings()
    defaults = settings.training
    options = opts.build_options(
        imputer=imputer,
        scaler=scaler,
        select=select,
        kbest_score=kbest_score,
        imbalance=imbalance,
        penalty=penalty,
        solver=solver,
        multiclass=multiclass,
        search=search,
        random_iterations=iterations or defaults.random_iterations,
        cv_folds=cv or defaults.cv_folds,
        test_size=test_size or defaults.test_size,
        seed=defaults.seed if seed is None else seed,
        n_jobs=defaults.n_jobs if jobs is None else jobs,
        scoring=scoring,
        threshold=threshold,
        max_iter=max_iter,
        space=parse_space(param or []),
    )
    data = load_dataset(dataset, target=target, time_column=time_column)
    result, logged = run_training(settings, data, options, register)
    if json_output:
        from toolkit.cli.console import print_json

        print_json(training_document(result, logged))
    else:
        render_training(result, logged)


def run_training(
    settings: Settings, data: Any, options: opts.TrainingOptions, register: str | None
) -> tuple[TrainingResult, LoggedRun]:
    """Train with a progress bar, then log (and register) the run."""
    from toolkit.cli.console import progress_bar, status_console
    from toolkit.tracking.runs import log_training
    from toolkit.tracking.store import open_store
    from toolkit.training.trainer import DiagnosticLimits, train

    limits = DiagnosticLimits(settings.training.overfit_gap, settings.training.vif_limit, settings.training.leakage_auc)
    with progress_bar(f"training on {data.name}") as advance:
        result = train(data, options, limits, on_progress=advance)
    with status_console.status("logging to MLflow"):
        store = open_store(settings)
        logged = log_training(store, result, register)
    return result, logged


def parse_space(items: list[str]) -> dict[str, list[Any]]:
    """Parse `NAME=V1,V2` overrides; numbers become numbers, anything else stays text."""
    space: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ConfigError(f"--param {item!r} is not NAME=V1,V2,...")
        space[name.strip()] = [_number_or_text(value.strip()) for value in values.split(",") if value.strip()]
    return space


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def training_document(result: TrainingResult, logged: LoggedRun) -> dict[str, Any]:
    """The JSON form of a training run."""
    card = result.card
    return {
        "run_id": logged.run_id,
        "model": logged.model_name,
        "version": logged.version,
        "dataset": card.dataset.model_dump(),
        "task": card.task,
        "classes": card.classes,
        "scoring": card.scoring,
        "cv_score": card.cv_score,
        "train_score": card.train_score,
        "metrics": card.metrics,
        "metrics_at_0.5": card.metrics_at_default_threshold,
        "threshold": card.threshold.model_dump() if card.threshold else None,
        "confusion_matrix": result.evaluation.confusion.tolist(),
        "best_params": card.best_params,
        "warnings": card.warnings,
        "onnx_parity_max_error": card.onnx_parity_max_error,
        "artifact_uri": logged.artifact_uri,
        "run_url": logged.url,
    }


def render_training(result: TrainingResult, logged: LoggedRun) -> None:
    """The people's view of a training run: metrics, confusion matrix, warnings, where it was logged."""
    from toolkit.cli.console import console, format_metric

    card = result.card
    binary = card.threshold is not None
    title = (
        f"{card.dataset.name}: holdout of {card.dataset.holdout_rows} rows ({card.task}, {len(card.features)} features)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    if binary and card.threshold is not None:
        table.add_column(f"at threshold {card.threshold.value:.3f} ({card.threshold.strategy})", justify="right")
        table.add_column("at 0.5", justify="right")
    else:
        table.add_column("value", justify="right")
    for name, value in card.metrics.items():
        row = [name, format_metric(value)]
        if binary:
            row.append(format_metric(card.metrics_at_default_threshold.get(name)))
        table.add_row(*row)
    console.print(table)

    confusion = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    confusion.add_column("")
    for label in card.classes:
        confusion.add_column(str(label), justify="right")
    for label, row in zip(card.classes, result.evaluation.confusion, strict=True):
        confusion.add_row(str(label), *(str(count) for count in row))
    console.print(confusion)

    console.print(f"cross-validated {card.scoring}: {card.cv_score:.4f} (training data {card.train_score:.4f})")
    if card.threshold is not None:
        console.print(
            f"threshold for {card.positive_class!r}: {card.threshold.value:.4f} "
            f"(F1-optimal {card.threshold.f1_optimal:.4f}, Youden's J {card.threshold.youden:.4f}, "
            "both from out-of-fold predictions)"
        )
    if card.best_params:
        console.print("best parameters: " + ", ".join(f"{key}={value}" for key, value in card.best_params.items()))
    console.print(f"ONNX export verified: max probability difference {card.onnx_parity_max_error:.1e}")
    for warning in card.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"run {logged.run_id} logged to {logged.url or logged.artifact_uri}")
    if logged.version:
        console.print(f"[green]registered[/] {logged.model_name} version {logged.version}")
