"""`mct demo`: the main job end to end on the embedded defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from serving.local_stack import LocalStack, routed_prediction
from toolkit.cli.console import console, status_console
from toolkit.cli.promotion import render_outcome
from toolkit.cli.publishing import render_publish, render_verify
from toolkit.cli.train import render_training, run_training
from toolkit.clouds import cloud_stores, emulator_buckets
from toolkit.config import Settings, load_settings
from toolkit.data import Dataset, load_dataset
from toolkit.emulators import Endpoints, ensure_emulators, read_state, stop_emulators
from toolkit.publishing.publish import publish_bundle
from toolkit.publishing.verify import verify_clouds
from toolkit.training.options import build_options

__all__ = ["demo_command"]


PREDICTION_ROWS = 6


def render_predictions(router_url: str, data: Dataset) -> None:
    """Send a few rows through the router and show what came back and which cloud answered."""
    table = Table("row", "true class", "predicted", "P(malignant)", "routed to", "model version")
    for index in data.X.sample(PREDICTION_ROWS, random_state=0).index:
        answer, headers = routed_prediction(router_url, data.X.loc[index].to_dict())
        classes = list(answer["classes"])
        probability = answer["predictions"][0][classes.index("malignant")]
        table.add_row(
            str(index),
            str(data.y[index]),
            str(answer["labels"][0]),
            f"{probability:.3f}",
            headers.get("x-routed-to", "-"),
            headers.get("x-model-version", "-"),
        )
    console.print(table)


def demo_command(
    model: Annotated[str, typer.Option(help="Registered model name to use.")] = "breast_cancer",
    drill_seconds: Annotated[float, typer.Option(help="Length of the kill-one drill (0 skips it).")] = 30.0,
) -> None:
    """Train, register, promote, publish to three emulated clouds, verify, serve behind the router, drill.

    Everything the demo starts (emulators, servers, router) is stopped at the end; emulators that were
    already running are left as they were.
    """
    settings = load_settings()
    already_running = read_state(settings.home)
    emulators = ensure_emulators(settings.home, emulator_buckets(settings))
    try:
        published_ok = _demo_steps(settings, model, drill_seconds, emulators.endpoints)
    finally:
        if already_running is None or already_running.processes != emulators.processes:
            stop_emulators(settings.home)
    console.print(f"explore the runs, plots and registry: `mct ui` (MLflow UI on {settings.home / 'mlflow.db'})")
    if not published_ok:
        raise typer.Exit(1)


def _demo_steps(settings: Settings, model: str, drill_seconds: float, endpoints: Endpoints) -> bool:
    from serving.drill.runner import DrillOptions, run_drill
    from toolkit.cli.drill import render_drill
    from toolkit.publishing.export import export_bundle
    from toolkit.tracking.promotion import promote
    from toolkit.tracking.store import open_store

    console.rule("1/7 local cloud emulators")
    console.print(f"S3 (moto) {endpoints.s3}, GCS (fake-gcs-server) {endpoints.gcs}, Azure Blob (Azurite)")

    console.rule("2/7 train on breast_cancer")
    options = build_options(
        seed=settings.training.seed, cv_folds=settings.training.cv_folds, n_jobs=settings.training.n_jobs
    )
    result, logged = run_training(settings, load_dataset("breast_cancer"), options, register=model)
    render_training(result, logged)

    console.rule(f"3/7 promote {model} v{logged.version} to champion")
    tracking = open_store(settings)
    render_outcome(promote(tracking, model, str(logged.version), settings.promotion))

    console.rule("4/7 publish the champion to aws, gcp and azure")
    stores = cloud_stores(settings)
    with tempfile.TemporaryDirectory(prefix="mct-demo-") as scratch:
        bundle = export_bundle(tracking, model, "@champion", Path(scratch))
        published = publish_bundle(bundle, stores)
    render_publish(model, bundle.manifest.version, published)

    console.rule("5/7 verify every cloud")
    verified = verify_clouds(stores, model)
    render_verify(model, verified)

    console.rule("6/7 serve from every cloud behind the router")
    with LocalStack(list(stores), settings.home / "demo") as stack:
        console.print(f"router {stack.router_url} -> " + ", ".join(f"{c} {u}" for c, u in stack.servers.items()))
        render_predictions(stack.router_url, load_dataset("breast_cancer"))

    slo_met = True
    if drill_seconds > 0:
        console.rule(f"7/7 failover drill: kill one cloud's server for a while ({drill_seconds:.0f} s of load)")
        drill = run_drill(
            settings,
            DrillOptions(model=model, scenarios=["kill-one"], duration_seconds=drill_seconds),
            say=status_console.print,
        )
        render_drill(drill.reports)
        console.print(f"report {drill.report_path}")
        console.print(f"timeline {drill.timeline_path}")
        slo_met = drill.slo_met

    console.print()
    console.print(f"holdout ROC AUC {result.card.metrics['roc_auc']:.4f}; data directory {settings.home}")
    console.print(f"next: `mct models show {model}`, `mct verify {model}` (after `mct emulators up`), `mct drill`")
    return all(item.ok for item in published) and all(item.ok for item in verified) and slo_met
