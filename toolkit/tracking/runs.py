"""Log a training run to MLflow: parameters, metrics, plots, model card, scikit-learn and ONNX models."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import skops.io
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from toolkit.bundle.card import CARD_FILE, CARD_MARKDOWN_FILE, ONNX_FILE, ModelCard
from toolkit.data.datasets import TARGET_COLUMN
from toolkit.errors import RegistryError
from toolkit.tracking.store import TrackingStore
from toolkit.training.plots import plot_coefficients, plot_confusion, plot_pr, plot_roc
from toolkit.training.trainer import TrainingResult

__all__ = ["BUNDLE_DIR", "HOLDOUT_FILE", "SPLIT_DIR", "TRAIN_ROWS_FILE", "LoggedRun", "log_training"]

BUNDLE_DIR = "bundle"
PLOTS_DIR = "plots"
SPLIT_DIR = "split"
HOLDOUT_FILE = "holdout.parquet"
TRAIN_ROWS_FILE = "train_rows.npy"
SKLEARN_MODEL = "model"
# Pinned in the logged model so MLflow does not infer them (a subprocess of several seconds).
MODEL_REQUIREMENTS = ["scikit-learn", "imbalanced-learn", "skops"]


@dataclass(frozen=True)
class LoggedRun:
    """Where a training run landed."""

    run_id: str
    experiment_id: str
    model_name: str | None
    version: str | None
    artifact_uri: str
    url: str | None = None


def log_training(store: TrackingStore, result: TrainingResult, model_name: str | None = None) -> LoggedRun:
    """Log `result` as one MLflow run; with `model_name`, register it as a new version."""
    card = result.card.model_copy(update={"model_name": model_name})
    with (
        tempfile.TemporaryDirectory(prefix="mct-run-") as scratch,
        mlflow.start_run(experiment_id=store.experiment_id) as run,
    ):
        mlflow.set_tags(
            {"mct.dataset": result.dataset.name, "mct.task": card.task, "mct.fingerprint": card.dataset.fingerprint}
        )
        mlflow.log_params(_flat_params(result))
        mlflow.log_metrics(_all_metrics(result))
        root = Path(scratch)
        _write_bundle(root / BUNDLE_DIR, result, card)
        _write_plots(root / PLOTS_DIR, result)
        _write_split(root / SPLIT_DIR, result)
        mlflow.log_artifacts(str(root))
        logged = _log_sklearn_model(result)
        version = _register(store, model_name, run.info.run_id, logged, _summary(card)) if model_name else None
        run_id = run.info.run_id
        return LoggedRun(run_id, store.experiment_id, model_name, version, run.info.artifact_uri, store.run_url(run_id))


def _flat_params(result: TrainingResult) -> dict[str, str]:
    params = {key: str(value) for key, value in result.options.model_dump().items() if key != "space"}
    params["dataset"] = result.dataset.name
    params["scoring"] = result.scoring
    params.update({f"best.{key}": str(value) for key, value in result.card.best_params.items()})
    return params


def _all_metrics(result: TrainingResult) -> dict[str, float]:
    card = result.card
    values = dict(card.metrics)
    values.update({f"{name}_at_0.5": value for name, value in card.metrics_at_default_threshold.items()})
    values.update(
        {
            "cv_score": card.cv_score,
            "train_score": card.train_score,
            "onnx_parity_max_error": card.onnx_parity_max_error,
        }
    )
    if card.threshold is not None:
        values["threshold"] = card.threshold.value
    return {name: value for name, value in values.items() if np.isfinite(value)}


def _write_bundle(directory: Path, result: TrainingResult, card: ModelCard) -> None:
    directory.mkdir(parents=True)
    (directory / ONNX_FILE).write_bytes(result.onnx_model)
    (directory / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
    (directory / CARD_MARKDOWN_FILE).write_text(card.to_markdown())


def _write_plots(directory: Path, result: TrainingResult) -> None:
    holdout_y = result.holdout[TARGET_COLUMN].to_numpy()
    classes = result.card.classes
    plot_roc(holdout_y, result.holdout_proba, classes, directory / "roc_curve.png")
    plot_pr(holdout_y, result.holdout_proba, classes, directory / "pr_curve.png")
    plot_confusion(result.evaluation.confusion, classes, directory / "confusion_matrix.png")
    plot_coefficients(result.coefficient_names, result.coefficients, classes, directory / "coefficients.png")
    (directory / "cv_results.json").write_text(result.cv_results.to_json(orient="records", default_handler=str))


def _write_split(directory: Path, result: TrainingResult) -> None:
    """The holdout rows and the training rows' hashes, so a later gate can compare models fairly."""
    directory.mkdir(parents=True)
    result.holdout.to_parquet(directory / HOLDOUT_FILE, index=False)
    np.save(directory / TRAIN_ROWS_FILE, result.train_row_hashes)
    (directory / "findings.json").write_text(json.dumps([vars(finding) for finding in result.findings], indent=2))


def _log_sklearn_model(result: TrainingResult) -> mlflow.models.model.ModelInfo:
    example = result.holdout.drop(columns=TARGET_COLUMN).head(5)
    signature = infer_signature(example, result.inference.predict_proba(example))
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(result.inference))
    return mlflow.sklearn.log_model(
        result.inference,
        name=SKLEARN_MODEL,
        signature=signature,
        input_example=example.head(2),
        pip_requirements=MODEL_REQUIREMENTS,
        skops_trusted_types=trusted,
        pyfunc_predict_fn="predict_proba",
    )


def _summary(card: ModelCard) -> str:
    """One line for the registry's version description."""
    metric = card.metrics.get("roc_auc", float("nan"))
    threshold = f", threshold {card.threshold.value:.3f}" if card.threshold else ""
    return (
        f"{card.task} model on {card.dataset.name} ({card.dataset.rows} rows): holdout roc_auc {metric:.4f}{threshold}"
    )


def _register(
    store: TrackingStore, name: str, run_id: str, logged: mlflow.models.model.ModelInfo, description: str
) -> str:
    client = store.client
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        version = client.create_model_version(
            name, source=logged.model_uri, run_id=run_id, model_id=logged.model_id, description=description
        )
    except MlflowException as exc:
        raise RegistryError(f"cannot register model {name!r}: {exc.message}") from None
    return str(version.version)
