"""Prediction speed of the ONNX bundle against the scikit-learn pipeline it was exported from.

Trains one model with the toolkit (`toolkit.training.trainer.train`), then times `predict_proba` of the fitted
scikit-learn pipeline and of `OnnxClassifier` side by side on the holdout:

- single-row latency, p50 and p99 over many calls on one-row DataFrames, after a warm-up;
- batch throughput, rows/s on batches of `--rows` rows built by repeating the holdout;
- the raw onnxruntime path without pandas: a dict record turned into (1, 1) feeds, then `session.run`,
  the path serving is meant to take.

Run it with `make bench`, or `.venv/bin/python bench/onnx_vs_sklearn.py [--dataset NAME] [--rows N] [--json]`.
"""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["MPLBACKEND"] = "Agg"

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.data import load_dataset
from toolkit.training.options import build_options
from toolkit.training.trainer import train

SINGLE_CALLS = 2000
BATCH_CALLS = 50
WARMUP = 100
T = TypeVar("T")


def timings_ns(call: Callable[[T], object], inputs: Sequence[T], calls: int) -> np.ndarray:
    """Nanoseconds per call, cycling through `inputs`, after a warm-up."""
    for i in range(min(WARMUP, calls)):
        call(inputs[i % len(inputs)])
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        item = inputs[i % len(inputs)]
        start = time.perf_counter_ns()
        call(item)
        out[i] = time.perf_counter_ns() - start
    return out


def raw_predict(onnx: OnnxClassifier) -> Callable[[dict[str, Any]], object]:
    """One dict record -> one value per feature -> `session.run`, no pandas."""

    def predict(record: dict[str, Any]) -> object:
        return onnx.predict_proba_columns({name: [value] for name, value in record.items()})

    return predict


def measure(dataset: str, rows: int) -> dict[str, Any]:
    """Train once, then time both models; every latency in microseconds."""
    result = train(load_dataset(dataset), build_options(n_jobs=1))
    sk, onnx = result.inference, OnnxClassifier(result.onnx_model, result.card.features)
    X = result.holdout.drop(columns="__target__")
    singles = [X.iloc[[i]] for i in range(len(X))]
    records: list[dict[str, Any]] = X.to_dict(orient="records")
    batch = pd.concat([X] * (rows // len(X) + 1), ignore_index=True).iloc[:rows]
    figures: dict[str, Any] = {"dataset": dataset, "holdout_rows": len(X), "batch_rows": rows}
    figures["max_abs_proba_diff"] = float(np.abs(sk.predict_proba(X) - onnx.predict_proba(X)).max())
    for name, model in (("sklearn", sk), ("onnx", onnx)):
        one = timings_ns(model.predict_proba, singles, SINGLE_CALLS) / 1e3
        many = timings_ns(model.predict_proba, [batch], BATCH_CALLS) / 1e3
        figures[name] = {
            "single_p50_us": float(np.percentile(one, 50)),
            "single_p99_us": float(np.percentile(one, 99)),
            "batch_p50_us": float(np.median(many)),
            "batch_rows_per_s": rows / (float(np.median(many)) / 1e6),
        }
    raw = timings_ns(raw_predict(onnx), records, SINGLE_CALLS) / 1e3
    figures["onnx_raw"] = {
        "single_p50_us": float(np.percentile(raw, 50)),
        "single_p99_us": float(np.percentile(raw, 99)),
    }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    """Rows per measurement, sklearn and ONNX side by side, with the ratio."""
    sk, onnx, raw = (figures[k] for k in ("sklearn", "onnx", "onnx_raw"))
    n = figures["batch_rows"]
    table = Table(title=f"ONNX vs scikit-learn predict_proba, {figures['dataset']}", caption_justify="left")
    for column in ("measurement", "sklearn", "onnx", "ONNX speed-up"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    lines = [
        ("1 row, p50 (µs)", sk["single_p50_us"], onnx["single_p50_us"], False),
        ("1 row, p99 (µs)", sk["single_p99_us"], onnx["single_p99_us"], False),
        (f"{n}-row batch, p50 (µs)", sk["batch_p50_us"], onnx["batch_p50_us"], False),
        (f"{n}-row batch, rows/s", sk["batch_rows_per_s"], onnx["batch_rows_per_s"], True),
        ("1 row, p50 (µs), no pandas*", sk["single_p50_us"], raw["single_p50_us"], False),
        ("1 row, p99 (µs), no pandas*", sk["single_p99_us"], raw["single_p99_us"], False),
    ]
    for label, left, right, higher_is_better in lines:
        speedup = right / left if higher_is_better else left / right
        table.add_row(label, f"{left:,.0f}", f"{right:,.0f}", f"{speedup:.1f}x")
    table.caption = (
        "* OnnxClassifier.predict_proba_columns from a dict record, the path serving takes\n"
        f"max |Δ proba| sklearn vs onnx on the holdout: {figures['max_abs_proba_diff']:.2e}"
    )
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, measure, print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default="breast_cancer", help="built-in dataset or CSV/Parquet path")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch for the throughput figures")
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    args = parser.parse_args(argv)
    figures = measure(args.dataset, args.rows)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
