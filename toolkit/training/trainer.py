"""One training run from data to a verified ONNX bundle: split, search, tune, evaluate, diagnose, export.

Nothing here talks to MLflow; `toolkit.tracking` logs what `train` returns.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import (
    f1_score,
    get_scorer,
    get_scorer_names,
    jaccard_score,
    make_scorer,
    precision_score,
    recall_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from toolkit.bundle import FeatureSpec, ModelCard, ThresholdSpec
from toolkit.bundle.card import DatasetSummary
from toolkit.bundle.onnx_export import export_onnx
from toolkit.data import Dataset
from toolkit.data.datasets import MISSING_CATEGORY, TARGET_COLUMN
from toolkit.errors import ConfigError, DataError
from toolkit.training.diagnostics import (
    Finding,
    convergence_findings,
    leakage_findings,
    overfitting_findings,
    vif_findings,
)
from toolkit.training.evaluation import DEFAULT_THRESHOLD, Evaluation, ThresholdChoice, evaluate, tune_threshold
from toolkit.training.options import TrainingOptions
from toolkit.training.pipeline import build_pipeline, inference_pipeline
from toolkit.training.search import ProgressCallback, cross_validator, out_of_fold_proba, run_search, search_space

__all__ = ["DiagnosticLimits", "TrainingResult", "train"]

# SMOTE interpolates between a minority row and its k nearest minority neighbours (k = 5).
SMOTE_NEIGHBOURS = 5
# Binary scorers that need to be told which label is the positive class.
POSITIVE_LABEL_SCORERS = {
    "f1": f1_score,
    "precision": precision_score,
    "recall": recall_score,
    "jaccard": jaccard_score,
}


@dataclass(frozen=True)
class DiagnosticLimits:
    """Where the diagnostics start to warn."""

    overfit_gap: float = 0.05
    vif: float = 10.0
    leakage_auc: float = 0.99


@dataclass
class TrainingResult:
    """Everything a run produced, ready to be logged."""

    dataset: Dataset
    options: TrainingOptions
    pipeline: ImbPipeline
    inference: Pipeline
    onnx_model: bytes
    card: ModelCard
    evaluation: Evaluation
    evaluation_at_default: Evaluation | None
    threshold: ThresholdChoice | None
    findings: list[Finding]
    holdout: pd.DataFrame
    holdout_proba: np.ndarray
    train_row_hashes: np.ndarray
    cv_results: pd.DataFrame
    coefficient_names: list[str]
    coefficients: np.ndarray

    @property
    def scoring(self) -> str:
        return self.card.scoring


def train(
    dataset: Dataset,
    options: TrainingOptions,
    limits: DiagnosticLimits | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train, tune and evaluate a logistic-regression pipeline on `dataset`.

    The holdout is split off first and used only for the final evaluation and the ONNX parity check.
    """
    limits = limits or DiagnosticLimits()
    options.check_for(dataset.task)
    classes = dataset.classes
    positive = classes[1] if dataset.task == "binary" else None
    scoring_name = options.scoring or ("roc_auc" if dataset.task == "binary" else "f1_macro")
    scorer = _scorer(scoring_name, positive)

    X_train, X_test, y_train, y_test, train_index = _split(dataset, options)
    _check_class_counts(y_train, options)
    cv = cross_validator(options, ordered_by_time=dataset.time is not None)

    pipeline = build_pipeline(options, dataset.task, dataset.numeric, dataset.categorical)
    encoded_features = pipeline.steps[0][1].fit(X_train.head(1000)).transform(X_train.head(1)).shape[1]
    space = search_space(options, dataset.task, encoded_features)
    with warnings.catch_warnings():
        # Candidates that stop at max_iter are common and harmless during the search (scikit-learn
        # passes this filter to its workers); the chosen model is checked once, below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = run_search(pipeline, space, options, cv, scorer, X_train, y_train, on_progress)
        best = search.best_estimator_
        threshold = None
        if positive is not None:
            rows, oof = out_of_fold_proba(best, cv, X_train, y_train)
            threshold = tune_threshold(y_train.iloc[rows].to_numpy(), oof[:, 1], positive, options.threshold)

    holdout_proba = best.predict_proba(X_test)
    evaluation = evaluate(y_test.to_numpy(), holdout_proba, classes, threshold.value if threshold else None)
    at_default = evaluate(y_test.to_numpy(), holdout_proba, classes, DEFAULT_THRESHOLD) if threshold else None

    train_score = float(scorer(best, X_train, y_train))
    holdout_score = float(scorer(best, X_test, y_test))
    findings = overfitting_findings(
        scoring_name, train_score, float(search.best_score_), holdout_score, limits.overfit_gap
    )
    findings += convergence_findings(best[-1], options.max_iter)
    findings += vif_findings(X_train, limits.vif)
    findings += leakage_findings(X_train, y_train, classes, limits.leakage_auc)

    inference = inference_pipeline(best)
    features = [
        FeatureSpec(name=name, type="number" if name in dataset.numeric else "string", onnx_input=name)
        for name in dataset.features
    ]
    onnx_model, features, parity_error = export_onnx(inference, X_test, features)
    names, coefficients = _coefficients(inference)

    card = ModelCard(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task="binary" if positive is not None else "multiclass",
        classes=classes,
        positive_class=positive,
        features=features,
        missing_category=MISSING_CATEGORY,
        threshold=ThresholdSpec(**vars(threshold)) if threshold else None,
        dataset=DatasetSummary(
            name=dataset.name,
            fingerprint=dataset.fingerprint(),
            rows=len(dataset.y),
            train_rows=len(y_train),
            holdout_rows=len(y_test),
            class_counts={str(label): int(count) for label, count in dataset.y.value_counts().sort_index().items()},
        ),
        scoring=scoring_name,
        cv_score=float(search.best_score_),
        train_score=train_score,
        metrics=evaluation.metrics,
        metrics_at_default_threshold=at_default.metrics if at_default else {},
        best_params={key: _plain(value) for key, value in search.best_params_.items()},
        options=options.model_dump(),
        warnings=dataset.notes + [finding.message for finding in findings],
        onnx_parity_max_error=parity_error,
        versions={
            package: importlib.metadata.version(package)
            for package in ("scikit-learn", "imbalanced-learn", "skl2onnx", "onnxruntime")
        },
    )
    holdout = X_test.assign(**{TARGET_COLUMN: y_test.to_numpy()})
    return TrainingResult(
        dataset=dataset,
        options=options,
        pipeline=best,
        inference=inference,
        onnx_model=onnx_model,
        card=card,
        evaluation=evaluation,
        evaluation_at_default=at_default,
        threshold=threshold,
        findings=findings,
        holdout=holdout,
        holdout_proba=holdout_proba,
        train_row_hashes=dataset.row_hashes()[train_index],
        cv_results=pd.DataFrame(search.cv_results_),
        coefficient_names=names,
        coefficients=coefficients,
    )


def _scorer(name: str, positive: str | int | None) -> Any:
    """A scorer by name; binary label-based ones are told which class is positive."""
    if name not in get_scorer_names():
        raise ConfigError(
            f"unknown scoring {name!r}; try roc_auc, average_precision, f1, f1_macro, accuracy, neg_log_loss"
        )
    if positive is not None and name in POSITIVE_LABEL_SCORERS:
        return make_scorer(POSITIVE_LABEL_SCORERS[name], pos_label=positive, zero_division=0)
    if positive is None and name in POSITIVE_LABEL_SCORERS:
        raise ConfigError(f"scoring {name!r} is for binary targets; use {name}_macro or {name}_weighted")
    return get_scorer(name)


def _split(
    dataset: Dataset, options: TrainingOptions
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series, np.ndarray]:
    """Holdout split: stratified and shuffled, or the most recent rows when ordered by time."""
    index = np.arange(len(dataset.y))
    if dataset.time is not None:
        order = np.argsort(dataset.time.to_numpy(), kind="stable")
        cut = round(len(order) * (1 - options.test_size))
        train_index, test_index = order[:cut], order[cut:]
    else:
        try:
            train_index, test_index = train_test_split(
                index, test_size=options.test_size, stratify=dataset.y, random_state=options.seed
            )
        except ValueError as exc:
            raise DataError(f"cannot split off a stratified holdout: {exc}") from None
    X, y = dataset.X, dataset.y
    if y.iloc[train_index].nunique() < 2:
        raise DataError("the training part holds a single class; use more data or a different --time-column")
    return (
        X.iloc[train_index].reset_index(drop=True),
        X.iloc[test_index].reset_index(drop=True),
        y.iloc[train_index].reset_index(drop=True),
        y.iloc[test_index].reset_index(drop=True),
        train_index,
    )


def _check_class_counts(y_train: pd.Series, options: TrainingOptions) -> None:
    counts = y_train.value_counts()
    rarest, fewest = counts.idxmin(), int(counts.min())
    if fewest < options.cv_folds:
        raise DataError(
            f"class {rarest!r} has only {fewest} training rows, fewer than the {options.cv_folds} folds; "
            "use a smaller --cv or more data"
        )
    per_fold = fewest * (options.cv_folds - 1) // options.cv_folds
    if options.imbalance == "smote" and per_fold <= SMOTE_NEIGHBOURS:
        raise DataError(
            f"class {rarest!r} has about {per_fold} rows per training fold; SMOTE needs more than "
            f"{SMOTE_NEIGHBOURS}: use --imbalance class-weight"
        )


def _coefficients(inference: Pipeline) -> tuple[list[str], np.ndarray]:
    """The model's input names (after preprocessing and selection) and its coefficient matrix."""
    names = [str(name) for name in inference[:-1].get_feature_names_out()]
    model = inference[-1]
    if hasattr(model, "estimators_"):
        coefficients = np.vstack([estimator.coef_ for estimator in model.estimators_])
    else:
        coefficients = model.coef_
    return names, np.atleast_2d(coefficients)


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a search parameter value."""
    if isinstance(value, np.generic):
        return value.item()
    return value
