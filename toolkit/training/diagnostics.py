"""Checks that flag a model not to trust blindly: overfitting, multicollinearity, target leakage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import label_binarize

__all__ = [
    "Finding",
    "convergence_findings",
    "leakage_findings",
    "overfitting_findings",
    "variance_inflation",
    "vif_findings",
]

# How many offending features a one-line message names before it says "and N more".
NAMED_IN_MESSAGE = 4


@dataclass(frozen=True)
class Finding:
    """A warning about the model or its data, with the figures behind it."""

    kind: str
    message: str
    details: dict[str, float] = field(default_factory=dict)


def overfitting_findings(
    scoring: str, train_score: float, cv_score: float, holdout_score: float, limit: float
) -> list[Finding]:
    """Warn when the model scores clearly better on its training data than on unseen data."""
    gap = train_score - holdout_score
    if gap <= limit:
        return []
    message = (
        f"possible overfitting: {scoring} is {train_score:.3f} on training data but {holdout_score:.3f} on the holdout "
        f"(gap {gap:.3f} > {limit}); try stronger regularisation (smaller C) or fewer features"
    )
    details = {"train": train_score, "cv": cv_score, "holdout": holdout_score, "gap": gap}
    return [Finding("overfitting", message, details)]


def convergence_findings(model: BaseEstimator, max_iter: int) -> list[Finding]:
    """Warn when the chosen model's solver stopped at its iteration limit instead of converging."""
    estimators = getattr(model, "estimators_", [model])
    iterations = max(int(np.max(estimator.n_iter_)) for estimator in estimators)
    if iterations < max_iter:
        return []
    message = (
        f"the solver stopped at its limit of {max_iter} iterations without converging; "
        "raise --max-iter, or try a smaller C or another --solver"
    )
    return [Finding("convergence", message, {"iterations": float(iterations)})]


def variance_inflation(X: pd.DataFrame) -> pd.Series:
    """Variance inflation factor of each numeric column: 1 / (1 - R^2) against all the others.

    Read off the diagonal of the inverse correlation matrix; missing values take the column median,
    constant columns are left out, perfectly collinear ones get infinity.
    """
    numeric = X.select_dtypes("number")
    numeric = numeric.fillna(numeric.median()).loc[:, numeric.std() > 0]
    if numeric.shape[1] < 2:
        return pd.Series(dtype=float)
    correlation = np.corrcoef(numeric.to_numpy(), rowvar=False)
    if np.linalg.matrix_rank(correlation) < correlation.shape[0]:
        inverse_diagonal = np.diag(np.linalg.pinv(correlation))
        rank_deficient = _collinear_columns(correlation)
        vif = np.where(rank_deficient, np.inf, inverse_diagonal)
    else:
        vif = np.diag(np.linalg.inv(correlation))
    return pd.Series(vif, index=numeric.columns).sort_values(ascending=False)


def vif_findings(X: pd.DataFrame, limit: float) -> list[Finding]:
    """Warn about the numeric features whose VIF exceeds `limit`."""
    vif = variance_inflation(X)
    high = vif[vif > limit]
    if high.empty:
        return []
    named = ", ".join(
        f"{name} ({value:.0f})" if np.isfinite(value) else f"{name} (inf)"
        for name, value in high.head(NAMED_IN_MESSAGE).items()
    )
    more = f" and {len(high) - NAMED_IN_MESSAGE} more" if len(high) > NAMED_IN_MESSAGE else ""
    message = (
        f"multicollinearity: {len(high)} features have VIF > {limit:g}: {named}{more}; "
        "coefficients of these are unstable, consider --select or dropping redundant columns"
    )
    return [Finding("multicollinearity", message, {str(name): float(value) for name, value in high.items()})]


def leakage_findings(X: pd.DataFrame, y: pd.Series, classes: list[str | int], limit: float) -> list[Finding]:
    """Warn about single features that separate the classes almost perfectly on their own.

    A numeric feature is scored as it is; a categorical one by its categories' class frequencies.
    Multiclass targets are checked one class against the rest and the AUCs averaged.
    """
    onehot = label_binarize(y, classes=classes)
    targets = [onehot.ravel()] if len(classes) == 2 else [onehot[:, k] for k in range(len(classes))]
    suspects: dict[str, float] = {}
    for column in X.columns:
        auc = float(np.mean([_separation(X[column], target) for target in targets]))
        if auc >= limit:
            suspects[str(column)] = auc
    if not suspects:
        return []
    named = ", ".join(f"{name} (AUC {auc:.3f})" for name, auc in list(suspects.items())[:NAMED_IN_MESSAGE])
    verb = "separates" if len(suspects) == 1 else "each separate"
    message = (
        f"possible target leakage: {named} {verb} the classes almost perfectly on its own; "
        "check that no feature is derived from the target or recorded after it"
    )
    return [Finding("leakage", message, suspects)]


def _separation(values: pd.Series, target: np.ndarray) -> float:
    """ROC AUC of one feature used as a score for a 0/1 target, in whichever direction is better."""
    if pd.api.types.is_numeric_dtype(values):
        score = values.fillna(values.median()).to_numpy()
    else:
        frequency = pd.Series(target, index=values.index).groupby(values).mean()
        score = values.map(frequency).to_numpy(dtype=float)
    if np.all(score == score[0]) or not 0 < target.sum() < len(target):
        return 0.5
    auc = roc_auc_score(target, score)
    return float(max(auc, 1.0 - auc))


def _collinear_columns(correlation: np.ndarray) -> np.ndarray:
    """Columns that lie in the span of the others (R^2 of one within rounding)."""
    flags = np.zeros(correlation.shape[0], dtype=bool)
    for index in range(correlation.shape[0]):
        others = np.delete(np.arange(correlation.shape[0]), index)
        block = correlation[np.ix_(others, others)]
        vector = correlation[others, index]
        r_squared = vector @ np.linalg.pinv(block) @ vector
        flags[index] = r_squared > 1 - 1e-9
    return flags
