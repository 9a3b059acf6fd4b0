"""Load a classification dataset (built-in name or CSV/Parquet path) and check it is usable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.errors import DataError

__all__ = ["BUILTIN_DATASETS", "MISSING_CATEGORY", "TARGET_COLUMN", "Dataset", "hash_rows", "load_dataset"]

# Missing categorical values become a category of their own: stateless, so it cannot leak, and
# the serving side can reproduce it without any fitted statistic.
MISSING_CATEGORY = "__missing__"
# Name of the target column where features and target travel in one frame (e.g. a saved holdout).
TARGET_COLUMN = "__target__"
# A categorical column with more distinct values than this is probably an identifier.
HIGH_CARDINALITY_RATIO = 0.5
# More classes than this is far more likely a mistaken target (an id, a measurement) than a task.
MAX_CLASSES = 50


@dataclass
class Dataset:
    """Features, target and what the rest of the toolkit needs to know about them."""

    name: str
    X: pd.DataFrame
    y: pd.Series
    numeric: list[str]
    categorical: list[str]
    time: pd.Series | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str | int]:
        """Sorted class labels; for binary data the last one is the positive class."""
        return sorted(self.y.unique().tolist())

    @property
    def task(self) -> str:
        """`binary` or `multiclass`."""
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def features(self) -> list[str]:
        return list(self.X.columns)

    def labelled(self) -> pd.DataFrame:
        """Features and target in one frame, the target last as `TARGET_COLUMN`."""
        return self.X.assign(**{TARGET_COLUMN: self.y.to_numpy()})

    def row_hashes(self) -> np.ndarray:
        """One 64-bit hash per row of features and target, to recognise rows across runs."""
        return hash_rows(self.labelled())

    def fingerprint(self) -> str:
        """SHA-256 over column names, row contents and their order."""
        digest = hashlib.sha256("\x1f".join(self.features).encode())
        digest.update(self.row_hashes().tobytes())
        return digest.hexdigest()


def hash_rows(labelled: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of a labelled frame; equal rows hash equal across runs and files."""
    return pd.util.hash_pandas_object(labelled, index=False).to_numpy(dtype=np.uint64)


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn import datasets as sk_datasets

    bunch = sk_datasets.load_breast_cancer(as_frame=True)
    names = np.asarray(bunch.target_names)
    return bunch.data, pd.Series(names[bunch.target], name="diagnosis")


def _iris() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn import datasets as sk_datasets

    bunch = sk_datasets.load_iris(as_frame=True)
    names = np.asarray(bunch.target_names)
    return bunch.data, pd.Series(names[bunch.target], name="species")


def _wine() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn import datasets as sk_datasets

    bunch = sk_datasets.load_wine(as_frame=True)
    names = np.asarray(bunch.target_names)
    return bunch.data, pd.Series(names[bunch.target], name="cultivar")


def _imbalanced() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn import datasets as sk_datasets

    X, y = sk_datasets.make_classification(
        n_samples=4000,
        n_features=12,
        n_informative=5,
        n_redundant=0,
        weights=[0.95],
        class_sep=1.0,
        flip_y=0.01,
        random_state=7,
    )
    columns = [f"x{i:02d}" for i in range(X.shape[1])]
    return pd.DataFrame(X, columns=columns), pd.Series(y, name="label")


BUILTIN_DATASETS: dict[str, Callable[[], tuple[pd.DataFrame, pd.Series]]] = {
    "breast_cancer": _breast_cancer,
    "iris": _iris,
    "wine": _wine,
    "imbalanced": _imbalanced,
}


def load_dataset(source: str, target: str | None = None, time_column: str | None = None) -> Dataset:
    """Load a built-in dataset by name or a CSV/Parquet file with a `target` column."""
    if source in BUILTIN_DATASETS:
        if time_column is not None:
            raise DataError(f"built-in dataset {source!r} has no time column; drop --time-column")
        X, y = BUILTIN_DATASETS[source]()
        return _prepare(source, X, y, time=None)
    path = Path(source)
    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        known = ", ".join(BUILTIN_DATASETS)
        raise DataError(f"unknown dataset {source!r}: use one of {known}, or a .csv/.parquet file")
    frame = _read_table(path)
    if target is None:
        raise DataError(f"{path} needs --target COLUMN to say which column to predict")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} is not in {path}; columns: {_names(frame.columns)}")
    time = None
    if time_column is not None:
        if time_column not in frame.columns:
            raise DataError(f"time column {time_column!r} is not in {path}; columns: {_names(frame.columns)}")
        if time_column == target:
            raise DataError("the time column cannot be the target column")
        time = _parse_time(frame.pop(time_column), time_column)
    y = frame.pop(target)
    return _prepare(path.name, frame, y, time=time)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"data file {path} has no rows")
    return frame


def _parse_time(column: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return column
    try:
        return pd.to_datetime(column)
    except (ValueError, TypeError):
        raise DataError(f"time column {name!r} is neither numeric nor a date") from None


def _prepare(name: str, X: pd.DataFrame, y: pd.Series, time: pd.Series | None) -> Dataset:
    notes: list[str] = []
    missing_target = y.isna().to_numpy()
    if missing_target.all():
        raise DataError(f"target column {y.name!r} has no values")
    if missing_target.any():
        notes.append(f"dropped {int(missing_target.sum())} rows with no target value")
        keep = ~missing_target
        X, y = X.loc[keep], y.loc[keep]
        time = time.loc[keep] if time is not None else None
    if y.nunique() < 2:
        raise DataError(f"target column {y.name!r} is constant ({y.iloc[0]!r}): a classifier needs two classes or more")
    if y.nunique() > MAX_CLASSES:
        raise DataError(f"target column {y.name!r} has {y.nunique()} distinct values: is it the right column?")
    if X.shape[1] == 0:
        raise DataError("the data has no feature columns besides the target")
    y = _normalise_labels(y)

    numeric: list[str] = []
    categorical: list[str] = []
    columns: dict[str, pd.Series] = {}
    for column in X.columns:
        values = X[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            notes.append(f"dropped date column {column!r} (use --time-column to order the splits by it)")
            continue
        if values.isna().all():
            notes.append(f"dropped column {column!r}: it has no values")
            continue
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            columns[str(column)] = values.astype("float64")
            numeric.append(str(column))
        else:
            columns[str(column)] = values.astype("object").where(values.notna(), MISSING_CATEGORY).astype(str)
            categorical.append(str(column))
            if values.nunique() > HIGH_CARDINALITY_RATIO * len(values) and len(values) > 20:
                notes.append(f"column {column!r} looks like an identifier ({values.nunique()} distinct values)")
    if not columns:
        raise DataError("no usable feature columns remain after dropping empty and date columns")
    features = pd.DataFrame(columns).reset_index(drop=True)
    target = y.reset_index(drop=True)
    if time is not None:
        time = time.reset_index(drop=True)
    return Dataset(name, features, target, numeric, categorical, time, notes)


def _normalise_labels(y: pd.Series) -> pd.Series:
    """Integer-valued labels stay integers; anything else becomes strings."""
    if pd.api.types.is_bool_dtype(y):
        return y.astype("int64")
    if pd.api.types.is_numeric_dtype(y):
        as_float = y.astype("float64")
        if np.all(np.mod(as_float, 1) == 0):
            return as_float.astype("int64")
        raise DataError(f"target column {y.name!r} holds continuous numbers: this toolkit does classification")
    return y.astype(str)


def _names(columns: pd.Index) -> str:
    shown = ", ".join(map(str, columns[:10]))
    return shown + (", ..." if len(columns) > 10 else "")
