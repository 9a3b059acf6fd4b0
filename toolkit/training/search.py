"""Cross-validated hyper-parameter search over the pipeline, with progress reporting.

The default space is described in `toolkit.training.options.SEARCH_SPACE_HELP`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from joblib import effective_n_jobs
from scipy.stats import loguniform, uniform
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import (
    BaseCrossValidator,
    GridSearchCV,
    ParameterGrid,
    ParameterSampler,
    RandomizedSearchCV,
    StratifiedKFold,
    TimeSeriesSplit,
)
from sklearn.model_selection._search import BaseSearchCV

from toolkit.errors import ConfigError
from toolkit.training.options import TrainingOptions
from toolkit.training.pipeline import model_param_prefix

__all__ = ["ProgressCallback", "cross_validator", "out_of_fold_proba", "run_search", "search_space"]

ProgressCallback = Callable[[int, int], None]
"""Called with (fits done, fits in total) as the search advances."""

GRID_C = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
GRID_L1_RATIO = [0.15, 0.5, 0.85]
FEATURE_FRACTIONS = [0.25, 0.5, 0.75]
GRID_PCA_VARIANCE = [0.8, 0.9, 0.95]
GRID_LASSO_C = [0.01, 0.1, 1.0]


def search_space(options: TrainingOptions, task: str, n_features: int) -> dict[str, Any]:
    """The parameter grid (or distributions) for these options, with overrides applied."""
    model = model_param_prefix(options, task)
    randomised = options.search == "random"
    space: dict[str, Any] = {}
    if options.penalty != "none":
        space[f"{model}C"] = loguniform(1e-3, 1e2) if randomised else GRID_C
    if options.penalty == "elasticnet":
        space[f"{model}l1_ratio"] = uniform(0.05, 0.9) if randomised else GRID_L1_RATIO
    if options.select == "kbest":
        counts = sorted({max(1, round(fraction * n_features)) for fraction in FEATURE_FRACTIONS})
        space["select__k"] = [count for count in counts if count < n_features] + ["all"]
    elif options.select == "rfe":
        space["select__n_features_to_select"] = FEATURE_FRACTIONS
    elif options.select == "pca":
        space["select__n_components"] = GRID_PCA_VARIANCE
    elif options.select == "lasso":
        space["select__estimator__C"] = GRID_LASSO_C
    aliases = {
        "C": f"{model}C",
        "l1_ratio": f"{model}l1_ratio",
        "k": "select__k",
        "n_features": "select__n_features_to_select",
        "n_components": "select__n_components",
        "lasso_C": "select__estimator__C",
    }
    for name, values in options.space.items():
        key = aliases.get(name, name)
        if key.startswith("select__") and options.select == "none":
            raise ConfigError(f"search parameter {name!r} needs a feature selector (--select)")
        if "__" not in key:
            raise ConfigError(f"unknown search parameter {name!r}; known: {', '.join(aliases)}")
        if not values:
            raise ConfigError(f"search parameter {name!r} has no values")
        space[key] = list(values)
    return space


def cross_validator(options: TrainingOptions, ordered_by_time: bool) -> BaseCrossValidator:
    """Stratified shuffled k-fold, or forward-chaining splits for time-ordered data."""
    if ordered_by_time:
        return TimeSeriesSplit(n_splits=options.cv_folds)
    return StratifiedKFold(n_splits=options.cv_folds, shuffle=True, random_state=options.seed)


def run_search(
    pipeline: BaseEstimator,
    space: dict[str, Any],
    options: TrainingOptions,
    cv: BaseCrossValidator,
    scoring: str,
    X: pd.DataFrame,
    y: pd.Series,
    on_progress: ProgressCallback | None = None,
) -> BaseSearchCV:
    """Fit the search on training data only; returns the fitted search, refitted on all of it."""
    common: dict[str, Any] = {"scoring": scoring, "cv": cv, "n_jobs": options.n_jobs, "refit": True}
    search: BaseSearchCV
    if options.search == "random":
        search = _RandomSearchWithProgress(
            pipeline, space, n_iter=options.random_iterations, random_state=options.seed, **common
        )
    else:
        search = _GridSearchWithProgress(pipeline, space, **common)
    search.on_progress = on_progress
    try:
        return search.fit(X, y)
    except ValueError as exc:
        raise ConfigError(f"the search failed: {str(exc).splitlines()[0]}") from None


def out_of_fold_proba(
    estimator: BaseEstimator, cv: BaseCrossValidator, X: pd.DataFrame, y: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for training rows from models that did not see them: (row indices, proba).

    Works for splits that do not cover every row (time-ordered ones skip the first block).
    """
    rows: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    for train_rows, validation_rows in cv.split(X, y):
        model = clone(estimator).fit(X.iloc[train_rows], y.iloc[train_rows])
        rows.append(validation_rows)
        probas.append(model.predict_proba(X.iloc[validation_rows]))
    return np.concatenate(rows), np.concatenate(probas)


class _ProgressMixin:
    """Evaluates candidates in chunks so progress can be reported between them."""

    on_progress: ProgressCallback | None = None
    n_jobs: int | None
    cv: BaseCrossValidator

    def __getstate__(self) -> dict[str, Any]:
        # scikit-learn sends the search object to worker processes; the callback stays here.
        state = dict(cast(dict[str, Any], super().__getstate__()))
        state.pop("on_progress", None)
        return state

    def _evaluate_in_chunks(self, candidates: Sequence[dict[str, Any]], evaluate: Callable[..., Any]) -> None:
        folds = self.cv.get_n_splits()
        chunk = max(1, effective_n_jobs(self.n_jobs))
        total = len(candidates) * folds
        for start in range(0, len(candidates), chunk):
            evaluate(candidates[start : start + chunk])
            if self.on_progress is not None:
                self.on_progress(min(total, (start + chunk) * folds), total)


class _GridSearchWithProgress(_ProgressMixin, GridSearchCV):
    def _run_search(self, evaluate_candidates: Callable[[Iterable[dict[str, Any]]], Any]) -> None:
        self._evaluate_in_chunks(list(ParameterGrid(self.param_grid)), evaluate_candidates)


class _RandomSearchWithProgress(_ProgressMixin, RandomizedSearchCV):
    def _run_search(self, evaluate_candidates: Callable[[Iterable[dict[str, Any]]], Any]) -> None:
        sampler = ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        self._evaluate_in_chunks(list(sampler), evaluate_candidates)
