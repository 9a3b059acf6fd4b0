"""Holdout evaluation: every metric the model card reports, and binary threshold tuning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk
from sklearn.preprocessing import label_binarize

__all__ = ["Evaluation", "ThresholdChoice", "evaluate", "tune_threshold"]

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one labelled set, at one decision threshold."""

    metrics: dict[str, float]
    confusion: np.ndarray
    classes: list[str | int]
    threshold: float | None


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold for the positive class and the candidates it was chosen from."""

    value: float
    strategy: str
    f1_optimal: float
    youden: float


def predict_labels(proba: np.ndarray, classes: list[str | int], threshold: float | None) -> np.ndarray:
    """Labels from probabilities: positive class above `threshold` (binary), else the likeliest."""
    labels = np.asarray(classes)
    if threshold is not None and len(classes) == 2:
        return labels[(proba[:, 1] >= threshold).astype(int)]
    return labels[np.argmax(proba, axis=1)]


def evaluate(y_true: np.ndarray, proba: np.ndarray, classes: list[str | int], threshold: float | None) -> Evaluation:
    """All holdout metrics; `threshold` is used for binary targets and ignored otherwise."""
    y_true = np.asarray(y_true)
    binary = len(classes) == 2
    y_pred = predict_labels(proba, classes, threshold if binary else None)
    confusion = sk.confusion_matrix(y_true, y_pred, labels=classes)
    values: dict[str, float] = {"accuracy": sk.accuracy_score(y_true, y_pred)}
    specificity = _specificity(confusion)
    onehot = label_binarize(y_true, classes=classes)
    if binary:
        positive = classes[1]
        values["precision"] = sk.precision_score(y_true, y_pred, pos_label=positive, zero_division=0)
        values["recall"] = sk.recall_score(y_true, y_pred, pos_label=positive, zero_division=0)
        values["specificity"] = specificity[1]
        values["fpr"] = 1.0 - specificity[1]
        values["f1"] = sk.f1_score(y_true, y_pred, pos_label=positive, zero_division=0)
        values["roc_auc"] = sk.roc_auc_score(onehot.ravel(), proba[:, 1])
        values["pr_auc"] = sk.average_precision_score(onehot.ravel(), proba[:, 1])
    else:
        for average in ("macro", "micro", "weighted"):
            values[f"precision_{average}"] = sk.precision_score(y_true, y_pred, average=average, zero_division=0)
            values[f"recall_{average}"] = sk.recall_score(y_true, y_pred, average=average, zero_division=0)
            values[f"f1_{average}"] = sk.f1_score(y_true, y_pred, average=average, zero_division=0)
        values["specificity_macro"] = float(np.mean(specificity))
        values["fpr_macro"] = 1.0 - values["specificity_macro"]
        values["roc_auc"] = sk.roc_auc_score(onehot, proba, multi_class="ovr", average="macro")
        values["pr_auc"] = sk.average_precision_score(onehot, proba, average="macro")
    values["log_loss"] = sk.log_loss(y_true, proba, labels=classes)
    if binary:
        values["brier"] = sk.brier_score_loss(onehot.ravel(), proba[:, 1])
    else:
        values["brier"] = sk.brier_score_loss(y_true, proba, labels=classes)
    return Evaluation({name: float(value) for name, value in values.items()}, confusion, classes, threshold)


def tune_threshold(
    y_true: np.ndarray, positive_proba: np.ndarray, positive: str | int, strategy: str
) -> ThresholdChoice:
    """F1-optimal and Youden's J thresholds from out-of-fold probabilities; pick by `strategy`.

    `strategy` is `f1`, `youden`, or a fixed probability such as `0.5`.
    """
    is_positive = np.asarray(y_true) == positive
    precision, recall, pr_thresholds = sk.precision_recall_curve(is_positive, positive_proba)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    f1_optimal = float(pr_thresholds[int(np.argmax(f1[:-1]))])
    fpr, tpr, roc_thresholds = sk.roc_curve(is_positive, positive_proba)
    finite = np.isfinite(roc_thresholds)
    youden = float(roc_thresholds[finite][int(np.argmax((tpr - fpr)[finite]))])
    chosen = {"f1": f1_optimal, "youden": youden}.get(strategy)
    value = float(strategy) if chosen is None else chosen
    return ThresholdChoice(value=value, strategy=strategy, f1_optimal=f1_optimal, youden=youden)


def _specificity(confusion: np.ndarray) -> np.ndarray:
    """True-negative rate of each class against the rest."""
    total = confusion.sum()
    true_positive = np.diag(confusion)
    false_positive = confusion.sum(axis=0) - true_positive
    false_negative = confusion.sum(axis=1) - true_positive
    true_negative = total - true_positive - false_positive - false_negative
    negatives = true_negative + false_positive
    return np.divide(true_negative, negatives, out=np.zeros(len(negatives)), where=negatives > 0)
