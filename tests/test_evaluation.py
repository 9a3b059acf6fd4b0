"""Holdout metrics against confusion matrices worked out by hand, and threshold tuning."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.training.evaluation import evaluate, tune_threshold


def test_binary_metrics_match_a_hand_counted_confusion_matrix() -> None:
    # Positive class "spam". At threshold 0.5: TP = 3 (rows 0-2), FN = 1 (row 3),
    # FP = 2 (rows 4-5), TN = 4 (rows 6-9).
    y = np.array(["spam"] * 4 + ["ham"] * 6, dtype=object)
    p_spam = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.2, 0.1, 0.4, 0.05])
    proba = np.column_stack([1 - p_spam, p_spam])
    result = evaluate(y, proba, ["ham", "spam"], threshold=0.5)
    assert result.confusion.tolist() == [[4, 2], [1, 3]]
    metrics = result.metrics
    assert metrics["accuracy"] == pytest.approx(7 / 10)
    assert metrics["precision"] == pytest.approx(3 / 5)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(4 / 6)
    assert metrics["fpr"] == pytest.approx(2 / 6)
    assert metrics["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    # ROC AUC: of 4 x 6 = 24 positive/negative pairs the positive scores higher in 20
    # (0.9 and 0.8 beat all six, 0.6 loses to 0.7, 0.3 loses to 0.7, 0.55 and 0.4).
    assert metrics["roc_auc"] == pytest.approx(20 / 24)
    assert metrics["brier"] == pytest.approx(np.mean((p_spam - (y == "spam")) ** 2))


def test_threshold_changes_the_confusion_matrix_but_not_the_ranking_metrics() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.35, 0.3, 0.1, 0.6, 0.45])
    proba = np.column_stack([1 - p, p])
    low, high = evaluate(y, proba, [0, 1], 0.32), evaluate(y, proba, [0, 1], 0.5)
    assert low.confusion.tolist() == [[2, 1], [0, 3]]
    assert high.confusion.tolist() == [[3, 0], [1, 2]]
    assert low.metrics["roc_auc"] == high.metrics["roc_auc"]


def test_multiclass_metrics_match_a_hand_counted_confusion_matrix() -> None:
    classes = ["a", "b", "c"]
    y = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
    predicted = ["a", "b", "b", "b", "c", "a"]
    proba = np.array([[0.8 if label == p else 0.1 for label in classes] for p in predicted])
    result = evaluate(y, proba, classes, threshold=None)
    assert result.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    metrics = result.metrics
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    precision = [1 / 2, 2 / 3, 1 / 1]
    recall = [1 / 2, 2 / 2, 1 / 2]
    assert metrics["precision_macro"] == pytest.approx(np.mean(precision))
    assert metrics["recall_macro"] == pytest.approx(np.mean(recall))
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    assert metrics["f1_macro"] == pytest.approx(np.mean(f1))
    assert metrics["f1_micro"] == pytest.approx(4 / 6)
    # Specificity per class: a 3/4, b 3/4, c 4/4.
    assert metrics["specificity_macro"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    assert 0 < metrics["roc_auc"] <= 1 and metrics["log_loss"] > 0


def test_threshold_tuning_finds_the_f1_and_youden_optima() -> None:
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    choice = tune_threshold(y, p, 1, "f1")
    # Predicting positive from 0.5 up: TP 3, FP 1, FN 0 -> F1 0.857, the best available.
    assert choice.f1_optimal == pytest.approx(0.5)
    # Youden's J = TPR - FPR is 1 - 1/5 = 0.8 at 0.5, also the best.
    assert choice.youden == pytest.approx(0.5)
    assert tune_threshold(y, p, 1, "0.65").value == pytest.approx(0.65)
    assert tune_threshold(y, p, 1, "youden").value == choice.youden
