"""PNG plots of a holdout evaluation: ROC, precision-recall, confusion matrix, coefficients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

__all__ = ["plot_coefficients", "plot_confusion", "plot_pr", "plot_roc"]

DPI = 110
# More coefficients than this make an unreadable bar chart; the largest in magnitude are kept.
MAX_COEFFICIENTS = 25


def _curves_per_class(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str | int]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, is-this-class, score) for the positive class (binary) or every class (one vs rest)."""
    y_true = np.asarray(y_true)
    if len(classes) == 2:
        return [(str(classes[1]), y_true == classes[1], proba[:, 1])]
    return [(str(label), y_true == label, proba[:, index]) for index, label in enumerate(classes)]


def plot_roc(y_true: np.ndarray, proba: np.ndarray, classes: list[str | int], path: Path) -> Path:
    """ROC curve of the positive class, or one per class (one vs rest)."""
    figure = Figure(figsize=(5.5, 5), dpi=DPI)
    axes = figure.subplots()
    for label, truth, score in _curves_per_class(y_true, proba, classes):
        fpr, tpr, _ = roc_curve(truth, score)
        axes.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (holdout)")
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_pr(y_true: np.ndarray, proba: np.ndarray, classes: list[str | int], path: Path) -> Path:
    """Precision-recall curve of the positive class, or one per class (one vs rest)."""
    figure = Figure(figsize=(5.5, 5), dpi=DPI)
    axes = figure.subplots()
    for label, truth, score in _curves_per_class(y_true, proba, classes):
        precision, recall, _ = precision_recall_curve(truth, score)
        average_precision = average_precision_score(truth, score)
        axes.step(
            recall, precision, where="post", label=f"{label} (AP {average_precision:.3f}, base rate {truth.mean():.2f})"
        )
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall curve (holdout)", ylim=(0, 1.02))
    axes.legend(loc="lower left", fontsize="small")
    return _save(figure, path)


def plot_confusion(confusion: np.ndarray, classes: list[str | int], path: Path) -> Path:
    """Confusion matrix as counts and normalised by true class, side by side."""
    figure = Figure(figsize=(10, 4.5), dpi=DPI)
    counts_axes, normalised_axes = figure.subplots(1, 2)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    for axes, matrix, title, fmt in (
        (counts_axes, confusion, "counts", "{:d}"),
        (normalised_axes, normalised, "normalised by true class", "{:.2f}"),
    ):
        image = axes.imshow(matrix, cmap="Blues")
        figure.colorbar(image, ax=axes, fraction=0.046)
        ticks = np.arange(len(classes))
        axes.set_xticks(ticks, [str(label) for label in classes], rotation=30, ha="right")
        axes.set_yticks(ticks, [str(label) for label in classes])
        axes.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            colour = "white" if value > threshold else "black"
            axes.text(column, row, fmt.format(value), ha="center", va="center", color=colour)
    return _save(figure, path)


def plot_coefficients(names: list[str], coefficients: np.ndarray, classes: list[str | int], path: Path) -> Path:
    """Coefficients on the model's inputs (scaled features): bars if binary, a heatmap per class if not."""
    coefficients = np.atleast_2d(coefficients)
    order = np.argsort(-np.abs(coefficients).max(axis=0))[:MAX_COEFFICIENTS]
    shown = [names[index] for index in order]
    height = max(3.0, 0.3 * len(shown) + 1.5)
    figure = Figure(figsize=(7, height), dpi=DPI)
    axes = figure.subplots()
    if coefficients.shape[0] == 1:
        values = coefficients[0, order]
        colours = ["#c0392b" if value > 0 else "#2471a3" for value in values]
        axes.barh(np.arange(len(shown)), values, color=colours)
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set_xlabel(f"coefficient (towards {classes[1]} when positive)")
    else:
        matrix = coefficients[:, order].T
        limit = float(np.abs(matrix).max()) or 1.0
        image = axes.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        figure.colorbar(image, ax=axes)
        axes.set_xticks(np.arange(len(classes)), [str(label) for label in classes], rotation=30, ha="right")
    axes.set_yticks(np.arange(len(shown)), shown)
    axes.invert_yaxis()
    axes.set_title("Coefficients on the scaled model inputs (largest first)")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    return path
