"""Tracking, registry and the promotion gate against a real MLflow store on SQLite."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from toolkit.config import PromotionPolicy
from toolkit.data import load_dataset
from toolkit.errors import ModelNotFound, PromotionRefused, RegistryError
from toolkit.tracking.promotion import alias_history, promote, rollback
from toolkit.tracking.registry import get_version, list_models, list_versions
from toolkit.tracking.runs import LoggedRun, log_training
from toolkit.tracking.store import TrackingStore
from toolkit.training.options import build_options
from toolkit.training.trainer import TrainingResult, train

LENIENT = PromotionPolicy(min_metrics={"roc_auc": 0.5}, tolerance=0.01)


def _train(store: TrackingStore, name: str, **values) -> tuple[TrainingResult, LoggedRun]:
    space = values.pop("space", {"C": [1.0]})
    options = build_options(n_jobs=1, cv_folds=3, space=space, **values)
    result = train(load_dataset("breast_cancer"), options)
    return result, log_training(store, result, name)


def _weak(store: TrackingStore, name: str, seed: int = 42) -> LoggedRun:
    """A deliberately poor model: one feature, heavily regularised."""
    return _train(store, name, select="kbest", space={"k": [1], "C": [0.0005]}, seed=seed)[1]


def test_a_training_run_logs_everything_and_registers_a_version(
    store: TrackingStore, model_name: str, tmp_path: Path
) -> None:
    result, logged = _train(store, model_name)
    assert logged.version == "1"
    run = store.client.get_run(logged.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(result.card.metrics["roc_auc"])
    assert run.data.metrics["threshold"] == pytest.approx(result.card.threshold.value)
    assert run.data.params["penalty"] == "l2"
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=logged.run_id, dst_path=str(tmp_path)))
    for relative in (
        "bundle/model.onnx",
        "bundle/model_card.json",
        "bundle/model_card.md",
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/confusion_matrix.png",
        "plots/coefficients.png",
        "split/holdout.parquet",
        "split/train_rows.npy",
    ):
        assert (artifacts / relative).stat().st_size > 0, relative
    assert (artifacts / "plots/roc_curve.png").read_bytes()[:4] == b"\x89PNG"
    model = mlflow.sklearn.load_model(f"models:/{model_name}/1")
    holdout = result.holdout.drop(columns="__target__")
    assert (model.predict_proba(holdout) == result.inference.predict_proba(holdout)).all()


def test_models_are_listed_with_versions_and_aliases(store: TrackingStore, model_name: str) -> None:
    _train(store, model_name)
    _train(store, model_name)
    promote(store, model_name, "2", LENIENT)
    summary = next(model for model in list_models(store) if model.name == model_name)
    assert (summary.versions, summary.latest, summary.aliases) == (2, "2", {"champion": "2"})
    versions = list_versions(store, model_name)
    assert [version.version for version in versions] == ["2", "1"]
    assert versions[0].aliases == ["champion"] and versions[0].dataset == "breast_cancer"
    description = store.client.get_model_version(model_name, "2").description
    assert description.startswith("binary model on breast_cancer (569 rows): holdout roc_auc 0.9")
    assert "roc_auc" in versions[0].metrics


def test_promotion_is_refused_below_the_minimum_with_both_figures(store: TrackingStore, model_name: str) -> None:
    logged = _weak(store, model_name)
    strict = PromotionPolicy(min_metrics={"roc_auc": 0.99})
    with pytest.raises(PromotionRefused, match=r"holdout roc_auc 0\.\d{4} < minimum 0\.9900"):
        promote(store, model_name, logged.version, strict)
    assert store.client.get_registered_model(model_name).aliases == {}


def test_a_worse_candidate_is_refused_against_the_champion_on_shared_rows(
    store: TrackingStore, model_name: str
) -> None:
    _train(store, model_name)
    first = promote(store, model_name, "1", LENIENT)
    assert first.changed and first.previous is None
    weak = _weak(store, model_name)
    tight = PromotionPolicy(min_metrics={"roc_auc": 0.5}, tolerance=0.001)
    with pytest.raises(PromotionRefused) as refusal:
        promote(store, model_name, weak.version, tight)
    # Same data and seed: the champion trained on none of the candidate's 143 holdout rows.
    assert "against champion v1's" in str(refusal.value)
    assert "on 143 rows neither trained on" in str(refusal.value)
    assert str(get_version(store, model_name, "@champion").version) == "1"


def test_an_equal_candidate_passes_the_champion_check(store: TrackingStore, model_name: str) -> None:
    _train(store, model_name)
    promote(store, model_name, "1", LENIENT)
    _train(store, model_name, seed=7)
    outcome = promote(store, model_name, "latest", LENIENT)
    check = outcome.checks[-1]
    assert check.name == "vs champion v1" and check.passed
    # A different seed splits differently: rows the champion trained on are left out.
    rows = int(check.detail.split(" on ")[1].split()[0])
    assert 20 <= rows < 143


def test_force_overrides_the_gate_and_is_recorded(store: TrackingStore, model_name: str) -> None:
    logged = _weak(store, model_name)
    strict = PromotionPolicy(min_metrics={"roc_auc": 0.99})
    outcome = promote(store, model_name, logged.version, strict, force=True, reason="hotfix for incident 42")
    assert outcome.forced and not outcome.checks[0].passed
    version = store.client.get_model_version(model_name, logged.version)
    assert version.tags["mct.forced_promotion"] == "hotfix for incident 42"
    assert alias_history(store, model_name)[-1].reason == "hotfix for incident 42"


def test_rollback_walks_back_through_the_alias_history(store: TrackingStore, model_name: str) -> None:
    for _ in range(3):
        _train(store, model_name)
    for version in ("1", "2", "3"):
        promote(store, model_name, version, LENIENT)
    assert rollback(store, model_name).version == "2"
    assert rollback(store, model_name).version == "1"
    with pytest.raises(RegistryError, match="no earlier version"):
        rollback(store, model_name)
    assert str(get_version(store, model_name, "@champion").version) == "1"
    actions = [(event.action, event.version) for event in alias_history(store, model_name)]
    assert actions == [("promote", "1"), ("promote", "2"), ("promote", "3"), ("rollback", "2"), ("rollback", "1")]


def test_promoting_the_current_champion_changes_nothing(store: TrackingStore, model_name: str) -> None:
    _train(store, model_name)
    promote(store, model_name, "1", LENIENT)
    again = promote(store, model_name, "1", LENIENT)
    assert not again.changed
    assert len(alias_history(store, model_name)) == 1


def test_missing_models_and_versions_are_named(store: TrackingStore, model_name: str) -> None:
    with pytest.raises(ModelNotFound, match=f"no registered model named '{model_name}'"):
        promote(store, model_name, "1", LENIENT)
    _train(store, model_name)
    with pytest.raises(ModelNotFound, match="has no version 9"):
        promote(store, model_name, "9", LENIENT)
    with pytest.raises(ModelNotFound, match="has no champion to roll back"):
        rollback(store, model_name)
