"""Request input, protocol-neutral: the body (size, content type, JSON) and the columns the model receives.

Both protocols turn a request into a `FeatureBatch` (one NumPy column per feature, no pandas) through
the functions here, so the rules are stated once:
- feature names must match the model card's exactly: none missing, none unknown, none twice;
- number features take JSON numbers and booleans (training turned boolean columns into 0/1); `null`
  is a missing value, fed as NaN for the pipeline's imputer; text, objects and infinities are refused;
- text features take strings; `null` becomes the card's `missing_category`, as it was in training;
- a batch has at least one row and at most the configured number.
Every refusal is a `RequestError` with a 4xx status and a message that names the feature, the row and
the value at fault.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request

from toolkit.bundle.card import FeatureSpec, ModelCard

__all__ = ["FeatureBatch", "InputSchema", "RequestError", "read_json"]

# Long feature lists are cut in messages: the client needs the first few names, not a wall of text.
NAMES_SHOWN = 8
JSON_MEDIA_TYPE = "application/json"


class RequestError(Exception):
    """A request the server refuses: its HTTP status (4xx) and a one-line message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FeatureBatch:
    """Validated model input: one column per feature name (float32, the model's type, for numbers; text objects)."""

    columns: dict[str, np.ndarray]
    rows: int


@dataclass(frozen=True)
class InputSchema:
    """What a model accepts, from its card: feature names, kinds and order, and the batch limit."""

    features: tuple[FeatureSpec, ...]
    missing_category: str
    max_rows: int
    names: tuple[str, ...] = field(init=False)
    by_name: dict[str, FeatureSpec] = field(init=False)
    all_numeric: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(feature.name for feature in self.features))
        object.__setattr__(self, "by_name", {feature.name: feature for feature in self.features})
        object.__setattr__(self, "all_numeric", all(feature.type == "number" for feature in self.features))

    @classmethod
    def from_card(cls, card: ModelCard, max_rows: int) -> InputSchema:
        return cls(tuple(card.features), card.missing_category, max_rows)

    def check_rows(self, rows: int) -> None:
        """Refuse an empty batch and one over the limit."""
        if rows == 0:
            raise RequestError(400, "the batch is empty: send at least one row")
        if rows > self.max_rows:
            raise RequestError(413, f"the batch has {rows} rows, over the limit of {self.max_rows}: split it")

    def check_names(self, given: Sequence[Any], where: str = "the request") -> None:
        """Refuse names that are not exactly the card's features (in any order)."""
        non_text = [name for name in given if not isinstance(name, str)]
        if non_text:
            raise RequestError(400, f"feature names in {where} must be strings, got {_shown(non_text)}")
        if len(given) == len(self.names) and set(given) == set(self.names):
            return
        problems = []
        duplicated = sorted({name for name in given if list(given).count(name) > 1})
        unknown = [name for name in given if name not in self.by_name]
        missing = [name for name in self.names if name not in set(given)]
        if duplicated:
            problems.append(f"duplicated {_shown(duplicated)}")
        if unknown:
            problems.append(f"unknown {_shown(unknown)}")
        if missing:
            problems.append(f"missing {_shown(missing)}")
        raise RequestError(
            400,
            f"{where} has {len(given)} features where the model expects {len(self.names)} "
            f"({'; '.join(problems)}); expected: {_shown(list(self.names))}",
        )

    def batch_from_rows(self, names: Any, rows: Any) -> FeatureBatch:
        """A batch from column names and rows of values in that order (`dataframe_split`)."""
        if not isinstance(names, list):
            raise RequestError(400, "the column names must be a JSON array of strings")
        if not isinstance(rows, list):
            raise RequestError(400, "the rows must be a JSON array of arrays")
        self.check_names(names)
        self.check_rows(len(rows))
        width = len(names)
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else "not an array"
                raise RequestError(400, f"row {index} has {got}: every row needs {width} values, one per column")
        matrix = _numeric(rows, ndim=2)
        if matrix is not None and self.all_numeric:
            # The fast path: one cast for the whole batch, each feature's values contiguous for onnxruntime.
            with np.errstate(over="ignore"):  # too large for float32 becomes infinity, refused just below
                block = _finite(names, np.ascontiguousarray(matrix.T, dtype=np.float32))
            return FeatureBatch({name: block[j] for j, name in enumerate(names)}, len(rows))
        columns = [list(values) for values in zip(*rows, strict=True)]
        return FeatureBatch({name: self.column(name, columns[j]) for j, name in enumerate(names)}, len(rows))

    def batch_from_records(self, records: Any) -> FeatureBatch:
        """A batch from a list of `{feature: value}` objects (`dataframe_records`, `instances`, `inputs`)."""
        if not isinstance(records, list):
            raise RequestError(400, "the records must be a JSON array of objects")
        self.check_rows(len(records))
        expected = set(self.names)
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RequestError(400, f"row {index} is not a JSON object of feature values")
            if record.keys() != expected:
                self.check_names(list(record), where=f"row {index}")
        return FeatureBatch(
            {name: self.column(name, [record[name] for record in records]) for name in self.names}, len(records)
        )

    def batch_from_columns(self, columns: Any) -> FeatureBatch:
        """A batch from one `{feature: [values]}` object (the columnar `instances`/`inputs` form)."""
        if not isinstance(columns, dict):
            raise RequestError(400, "the columns must be a JSON object of feature name to array of values")
        self.check_names(list(columns))
        for name, values in columns.items():
            if not isinstance(values, list):
                raise RequestError(400, f"feature {name!r} must be an array of values, one per row")
        lengths = sorted({len(values) for values in columns.values()})
        if len(lengths) > 1:
            raise RequestError(400, f"the feature arrays have different lengths: {_shown(lengths)}")
        self.check_rows(lengths[0])
        return FeatureBatch({name: self.column(name, columns[name]) for name in self.names}, lengths[0])

    def column(self, name: str, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """One feature's values, checked and converted: float32 with NaN for null, or text objects."""
        if self.by_name[name].type == "number":
            return _numbers(name, values)
        return _texts(name, values, self.missing_category)


def _numeric(values: Sequence[Any] | np.ndarray, ndim: int) -> np.ndarray | None:
    """`values` as a numeric array of `ndim` dimensions, or None when any value is not a number or bool."""
    if isinstance(values, np.ndarray):
        array = values
    else:
        try:
            array = np.asarray(values)
        except ValueError:  # nested arrays of unequal shapes
            return None
    return array if array.ndim == ndim and array.dtype.kind in "biuf" else None


def _numbers(name: str, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = _numeric(values, ndim=1)
    if array is None:
        items = values.tolist() if isinstance(values, np.ndarray) else values
        for row, value in enumerate(items):
            if value is not None and not isinstance(value, int | float):
                raise RequestError(400, f"feature {name!r} row {row}: {_value(value)} is not a number")
        array = np.array([np.nan if value is None else value for value in items], dtype=np.float64)
    with np.errstate(over="ignore"):
        return _finite([name], array.astype(np.float32).reshape(1, -1))[0]


def _finite(names: Sequence[str], block: np.ndarray) -> np.ndarray:
    """`block` (one row per feature, float32, NaN for missing) if it holds no infinity, else a 400."""
    if np.isinf(block).any():
        feature, row = (int(index) for index in np.argwhere(np.isinf(block))[0])
        raise RequestError(
            400, f"feature {names[feature]!r} row {row}: the value is infinite or too large for the model (float32)"
        )
    return block


def _texts(name: str, values: Sequence[Any] | np.ndarray, missing_category: str) -> np.ndarray:
    items = values.tolist() if isinstance(values, np.ndarray) else values
    texts = np.empty(len(items), dtype=object)
    for row, value in enumerate(items):
        if value is None:
            texts[row] = missing_category
        elif isinstance(value, str):
            texts[row] = value
        else:
            raise RequestError(400, f"feature {name!r} row {row}: {_value(value)} is not text (a JSON string)")
    return texts


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON document: content type JSON (or not stated), at most `max_bytes`, valid JSON."""
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != JSON_MEDIA_TYPE:
        raise RequestError(415, f"content type {content_type!r} is not supported: send {JSON_MEDIA_TYPE}")
    body = await _read_body(request, max_bytes)
    if not body:
        raise RequestError(400, "the body is empty: send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Python's json module writes NaN for missing values, and MLflow's server accepts it: so do we.
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, absurd nesting or digits
        raise RequestError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 past `max_bytes` (before reading it, when its length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > max_bytes:
            raise RequestError(
                413, f"the body has {int(declared)} bytes, over the limit of {max_bytes}: split the batch"
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestError(413, f"the body is over the limit of {max_bytes} bytes: split the batch")
    return bytes(body)


def _shown(items: Sequence[Any]) -> str:
    shown = ", ".join(repr(item) for item in items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def _value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, np.generic) else repr(value.item())
    return text if len(text) <= 40 else text[:37] + "..."
