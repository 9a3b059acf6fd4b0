"""The warnings fire on data built to trigger them, and stay quiet on data that should not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.training.diagnostics import leakage_findings, overfitting_findings, variance_inflation, vif_findings

RNG = np.random.default_rng(0)


def _independent(rows: int = 400) -> pd.DataFrame:
    return pd.DataFrame(RNG.normal(size=(rows, 3)), columns=["a", "b", "c"])


def test_vif_is_high_for_a_nearly_linear_combination_and_low_otherwise() -> None:
    frame = _independent()
    assert vif_findings(frame, 10.0) == []
    assert variance_inflation(frame).max() < 1.2
    frame["d"] = frame["a"] + frame["b"] + RNG.normal(scale=0.05, size=len(frame))
    findings = vif_findings(frame, 10.0)
    assert len(findings) == 1 and findings[0].kind == "multicollinearity"
    assert set(findings[0].details) == {"a", "b", "d"}
    assert findings[0].details["d"] > 100
    assert "VIF > 10" in findings[0].message


def test_vif_of_an_exact_copy_is_infinite() -> None:
    frame = _independent()
    frame["a_again"] = frame["a"] * 2
    vif = variance_inflation(frame)
    assert np.isinf(vif["a"]) and np.isinf(vif["a_again"])
    assert np.isfinite(vif["b"])


def test_leakage_fires_on_a_feature_derived_from_the_target() -> None:
    frame = _independent()
    y = pd.Series(np.where(RNG.random(len(frame)) < 0.3, "yes", "no"))
    assert leakage_findings(frame, y, ["no", "yes"], 0.99) == []
    frame["refund_issued"] = (y == "yes") * 5.0 + RNG.normal(scale=0.1, size=len(frame))
    findings = leakage_findings(frame, y, ["no", "yes"], 0.99)
    assert [finding.kind for finding in findings] == ["leakage"]
    assert list(findings[0].details) == ["refund_issued"]


def test_leakage_fires_on_a_categorical_feature_and_on_multiclass_targets() -> None:
    y = pd.Series(RNG.choice(["x", "y", "z"], size=300))
    frame = pd.DataFrame({"noise": RNG.normal(size=300), "status": y.map({"x": "s1", "y": "s2", "z": "s3"})})
    findings = leakage_findings(frame, y, ["x", "y", "z"], 0.99)
    assert list(findings[0].details) == ["status"]


def test_overfitting_fires_only_past_the_gap() -> None:
    assert overfitting_findings("roc_auc", 0.99, 0.95, 0.96, 0.05) == []
    findings = overfitting_findings("roc_auc", 1.0, 0.80, 0.81, 0.05)
    assert findings[0].details["gap"] == pytest.approx(0.19)
    assert "overfitting" in findings[0].message
