"""Run a bundle's ONNX model with onnxruntime: the same code for the promotion gate and for serving."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.bundle.card import FeatureSpec

__all__ = ["OnnxClassifier"]

# onnxruntime reports usage unless told not to; it must be set before the first session exists.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime


class OnnxClassifier:
    """Class probabilities from an ONNX classifier whose inputs are one column per feature."""

    def __init__(self, model: bytes | Path, features: list[FeatureSpec]) -> None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        source = str(model) if isinstance(model, Path) else model
        self._session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.features = features

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities, one column per class in the card's class order."""
        return self.predict_proba_columns({feature.name: X[feature.name].to_numpy() for feature in self.features})

    def predict_proba_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """Probabilities from one sequence of values per feature name: the path without pandas."""
        feeds = {}
        for feature in self.features:
            values = columns[feature.name]
            if feature.type == "number":
                feeds[feature.onnx_input] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
            else:
                feeds[feature.onnx_input] = np.asarray(values, dtype=str).astype(object).reshape(-1, 1)
        _, probabilities = self._session.run(None, feeds)
        proba = np.asarray(probabilities, dtype=np.float64)
        # float32 rows sum to 1 only within rounding; metrics such as log loss check the sum.
        return proba / proba.sum(axis=1, keepdims=True)
