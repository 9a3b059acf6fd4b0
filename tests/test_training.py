"""Real training runs on small data: quality, leak-freeness, ONNX parity, search behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE

from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.data import load_dataset
from toolkit.data.datasets import TARGET_COLUMN
from toolkit.errors import DataError, ExportError
from toolkit.training.options import build_options
from toolkit.training.pipeline import build_pipeline
from toolkit.training.search import cross_validator, run_search, search_space
from toolkit.training.trainer import train


def _options(**values):
    return build_options(n_jobs=1, cv_folds=values.pop("cv_folds", 3), **values)


def test_breast_cancer_reaches_a_holdout_roc_auc_of_0_99() -> None:
    result = train(load_dataset("breast_cancer"), _options(cv_folds=5))
    assert result.card.metrics["roc_auc"] >= 0.99
    assert result.card.threshold is not None
    assert result.card.threshold.value == pytest.approx(result.card.threshold.f1_optimal)
    assert result.card.dataset.holdout_rows == 143
    assert any(finding.kind == "multicollinearity" for finding in result.findings)


def test_iris_gives_a_multinomial_model_with_accuracy_of_0_9() -> None:
    result = train(load_dataset("iris"), _options())
    model = result.inference[-1]
    assert model.coef_.shape == (3, 4), "one coefficient row per class: a multinomial fit"
    assert result.card.metrics["accuracy"] >= 0.9
    assert result.card.threshold is None
    assert result.card.scoring == "f1_macro"


def test_imbalance_handling_raises_minority_recall_at_the_default_threshold() -> None:
    data = load_dataset("imbalanced")
    recall = {
        imbalance: train(data, _options(imbalance=imbalance)).card.metrics_at_default_threshold["recall"]
        for imbalance in ("none", "class-weight", "smote")
    }
    assert recall["class-weight"] > recall["none"] + 0.2
    assert recall["smote"] > recall["none"] + 0.2


class RecordingSMOTE(SMOTE):
    """SMOTE that remembers how many rows it was asked to resample each time."""

    seen: ClassVar[list[int]] = []

    def fit_resample(self, X, y, **params):
        RecordingSMOTE.seen.append(len(X))
        return super().fit_resample(X, y, **params)


def test_smote_runs_only_on_training_folds() -> None:
    data = load_dataset("imbalanced")
    options = _options(imbalance="smote", cv_folds=4)
    pipeline = build_pipeline(options, data.task, data.numeric, data.categorical)
    pipeline.set_params(resample=RecordingSMOTE(random_state=0))
    X, y = data.X.iloc[:2000], data.y.iloc[:2000]
    RecordingSMOTE.seen.clear()
    search = run_search(pipeline, {"model__C": [0.1, 1.0]}, options, cross_validator(options, False), "roc_auc", X, y)
    # 2 candidates x 4 folds, each resampling 3/4 of the rows, then one refit on all of them;
    # never a validation row, so scores are measured on the original class balance.
    assert sorted(RecordingSMOTE.seen) == [1500] * 8 + [2000]
    assert search.best_estimator_.named_steps["resample"] is not None


@pytest.mark.parametrize(
    "values",
    [
        {"select": "kbest"},
        {"select": "rfe", "penalty": "l1"},
        {"select": "lasso", "penalty": "elasticnet"},
        {"select": "pca", "imputer": "knn", "scaler": "robust"},
        {"select": "kbest", "kbest_score": "chi2", "scaler": "minmax", "penalty": "none"},
        {"multiclass": "ovr", "imbalance": "class-weight"},
        {"imbalance": "undersample", "imputer": "mean"},
    ],
)
def test_onnx_export_matches_scikit_learn_for_every_pipeline_shape(values: dict[str, str]) -> None:
    data = load_dataset("wine" if values.get("multiclass") == "ovr" else "breast_cancer")
    result = train(data, _options(**values, space={"C": [1.0]} if values.get("penalty") != "none" else {}))
    holdout = result.holdout.drop(columns=TARGET_COLUMN)
    onnx = OnnxClassifier(result.onnx_model, result.card.features).predict_proba(holdout)
    assert np.abs(onnx - result.inference.predict_proba(holdout)).max() <= 1e-5
    assert result.card.onnx_parity_max_error <= 1e-5


def _customers(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    plan = rng.choice(["basic", "pro", "team"], rows)
    tenure = rng.exponential(24, rows)
    score = 1.5 * (plan == "basic") - 0.05 * tenure + rng.normal(0, 0.7, rows)
    frame = pd.DataFrame({"plan": plan, "tenure": tenure, "support_calls": rng.poisson(2, rows)})
    frame.loc[rng.random(rows) < 0.1, "tenure"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "plan"] = None
    frame["signup"] = pd.date_range("2023-01-01", periods=rows, freq="D").astype(str)
    frame["churned"] = np.where(score > 0, "yes", "no")
    return frame


def test_csv_with_categorical_and_missing_values_trains_and_exports(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    _customers().drop(columns="signup").to_csv(path, index=False)
    result = train(load_dataset(str(path), target="churned"), _options())
    assert [feature.type for feature in result.card.features] == ["string", "number", "number"]
    assert result.card.metrics["roc_auc"] > 0.8
    holdout = result.holdout.drop(columns=TARGET_COLUMN)
    onnx = OnnxClassifier(result.onnx_model, result.card.features).predict_proba(holdout)
    assert np.abs(onnx - result.inference.predict_proba(holdout)).max() <= 1e-5


def test_time_column_holds_out_the_latest_rows(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    frame = _customers().sample(frac=1.0, random_state=1)
    frame.to_csv(path, index=False)
    data = load_dataset(str(path), target="churned", time_column="signup")
    result = train(data, _options(test_size=0.25))
    latest = frame.sort_values("signup").tail(100)
    assert sorted(result.holdout["support_calls"]) == sorted(latest["support_calls"])
    assert result.card.dataset.holdout_rows == 100


def test_random_search_draws_the_requested_number_of_candidates() -> None:
    result = train(load_dataset("breast_cancer"), _options(search="random", random_iterations=4, penalty="elasticnet"))
    assert len(result.cv_results) == 4
    assert {"model__C", "model__l1_ratio"} <= set(result.card.best_params)


def test_search_space_overrides_and_progress_reports() -> None:
    calls: list[tuple[int, int]] = []
    options = _options(select="kbest", space={"k": [3, 5], "C": [0.5]})
    result = train(load_dataset("breast_cancer"), options, on_progress=lambda done, total: calls.append((done, total)))
    assert len(result.cv_results) == 2
    assert result.card.best_params["select__k"] in (3, 5)
    assert calls[-1] == (6, 6), "2 candidates x 3 folds"
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_default_search_space_follows_the_options() -> None:
    options = _options(select="kbest", penalty="elasticnet")
    space = search_space(options, "binary", n_features=20)
    assert space["select__k"] == [5, 10, 15, "all"]
    assert space["model__C"] == [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    assert "model__l1_ratio" in space
    assert "model__C" not in search_space(_options(penalty="none"), "binary", 20)
    assert "model__estimator__C" in search_space(_options(multiclass="ovr"), "multiclass", 20)


def test_too_few_rows_per_class_for_the_folds_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"x": range(12), "y": [0] * 9 + [1] * 3}).to_csv(path, index=False)
    with pytest.raises(DataError, match="fewer than the 5 folds"):
        train(load_dataset(str(path), target="y"), _options(cv_folds=5, test_size=0.25))


def test_smote_on_a_tiny_minority_suggests_class_weights(tmp_path: Path) -> None:
    path = tmp_path / "rare.csv"
    pd.DataFrame({"x": range(100), "y": [0] * 90 + [1] * 10}).to_csv(path, index=False)
    with pytest.raises(DataError, match="use --imbalance class-weight"):
        train(load_dataset(str(path), target="y"), _options(imbalance="smote"))


def test_a_solver_stopped_at_its_limit_is_reported() -> None:
    options = _options(penalty="elasticnet", max_iter=10, space={"C": [100.0], "l1_ratio": [0.5]})
    result = train(load_dataset("breast_cancer"), options)
    assert [finding.kind for finding in result.findings if finding.kind == "convergence"] == ["convergence"]
    assert any("--max-iter" in warning for warning in result.card.warnings)


def test_an_onnx_export_that_disagrees_with_scikit_learn_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # float32 inference differs from float64 by ~1e-7 here, so a zero tolerance must refuse it.
    monkeypatch.setattr("toolkit.bundle.onnx_export.PARITY_TOLERANCE", 0.0)
    with pytest.raises(
        ExportError, match=r"ONNX probabilities differ from scikit-learn's by up to .* the model was not"
    ):
        train(load_dataset("breast_cancer"), _options(space={"C": [1.0]}))
