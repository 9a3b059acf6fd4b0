"""Loading built-in datasets and user files, and the errors for unusable data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.data import load_dataset
from toolkit.data.datasets import MISSING_CATEGORY
from toolkit.errors import DataError


@pytest.mark.parametrize(
    ("name", "rows", "classes"),
    [
        ("breast_cancer", 569, ["benign", "malignant"]),
        ("iris", 150, ["setosa", "versicolor", "virginica"]),
        ("wine", 178, ["class_0", "class_1", "class_2"]),
    ],
)
def test_builtin_datasets_have_their_known_shape(name: str, rows: int, classes: list[str]) -> None:
    dataset = load_dataset(name)
    assert len(dataset.X) == rows
    assert dataset.classes == classes
    assert dataset.task == ("binary" if len(classes) == 2 else "multiclass")
    assert dataset.categorical == []


def test_imbalanced_dataset_has_about_five_percent_positives_and_is_fixed() -> None:
    first, second = load_dataset("imbalanced"), load_dataset("imbalanced")
    assert 0.04 <= first.y.mean() <= 0.07
    assert first.fingerprint() == second.fingerprint()


def test_csv_with_numeric_categorical_and_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    pd.DataFrame(
        {
            "age": [31, None, 45, 52, 23, 38],
            "plan": ["basic", "pro", None, "pro", "basic", "basic"],
            "active": [True, False, True, True, False, True],
            "churned": ["no", "yes", "no", "yes", "no", None],
        }
    ).to_csv(path, index=False)
    dataset = load_dataset(str(path), target="churned")
    assert dataset.numeric == ["age", "active"]
    assert dataset.categorical == ["plan"]
    assert len(dataset.X) == 5, "the row without a target is dropped"
    assert any("no target" in note for note in dataset.notes)
    assert MISSING_CATEGORY in set(dataset.X["plan"])
    assert np.isnan(dataset.X["age"]).sum() == 1


def test_parquet_file_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"x": [0.1, 0.5, 0.9, 0.3], "label": [0, 1, 1, 0]}).to_parquet(path)
    dataset = load_dataset(str(path), target="label")
    assert dataset.classes == [0, 1]


def test_time_column_is_parsed_and_removed_from_features(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pd.DataFrame({"when": ["2024-01-03", "2024-01-01", "2024-01-02"], "x": [1, 2, 3], "y": [0, 1, 0]}).to_csv(path)
    dataset = load_dataset(str(path), target="y", time_column="when")
    assert "when" not in dataset.X.columns
    assert dataset.time is not None and pd.api.types.is_datetime64_any_dtype(dataset.time)


def _written(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _csv(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("make_source", "target", "message"),
    [
        (lambda tmp: "no_such_dataset", None, "unknown dataset 'no_such_dataset'"),
        (lambda tmp: str(tmp / "absent.csv"), "y", "does not exist"),
        (lambda tmp: _written(tmp / "empty.csv", ""), "y", "is empty"),
        (lambda tmp: _written(tmp / "header.csv", "x,y\n"), "y", "has no rows"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"x": [1, 2], "y": [0, 1]})), "label", "target column 'label' is not in"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"x": [1, 2], "y": [0, 1]})), None, "needs --target"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"x": [1, 2, 3], "y": ["a", "a", "a"]})), "y", "is constant"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"x": [1, 2, 3], "y": [0.1, 0.7, 2.5]})), "y", "continuous"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"x": [1, 2], "y": [None, None]})), "y", "has no values"),
        (lambda tmp: _csv(tmp, pd.DataFrame({"y": [0, 1]})), "y", "no feature columns"),
    ],
)
def test_unusable_data_gets_one_clear_error(tmp_path: Path, make_source, target: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(make_source(tmp_path), target=target)
