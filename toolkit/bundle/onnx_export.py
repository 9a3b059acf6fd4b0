"""Export a fitted inference pipeline to ONNX and prove it predicts what scikit-learn predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from sklearn.pipeline import Pipeline

from toolkit.bundle.card import FeatureSpec
from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.errors import ExportError

__all__ = ["PARITY_TOLERANCE", "export_onnx"]

# The largest difference in any class probability that still counts as the same model.
PARITY_TOLERANCE = 1e-5


def export_onnx(
    pipeline: Pipeline, X_check: pd.DataFrame, features: list[FeatureSpec]
) -> tuple[bytes, list[FeatureSpec], float]:
    """Convert `pipeline`; return the model, the features with their ONNX input names, and the parity error.

    Raises `ExportError` when the conversion fails or when ONNX probabilities on `X_check` differ
    from scikit-learn's by more than `PARITY_TOLERANCE`.
    """
    sample = _onnx_frame(X_check.head(1), features)
    try:
        model = to_onnx(pipeline, sample, options={"zipmap": False})
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise ExportError(f"cannot convert the pipeline to ONNX: {str(exc).splitlines()[0]}") from None
    payload = model.SerializeToString()
    onnx_inputs = [node.name for node in model.graph.input]
    if len(onnx_inputs) != len(features):
        raise ExportError(f"the ONNX model has {len(onnx_inputs)} inputs for {len(features)} features")
    mapped = [
        feature.model_copy(update={"onnx_input": name}) for feature, name in zip(features, onnx_inputs, strict=True)
    ]
    expected = pipeline.predict_proba(X_check)
    actual = OnnxClassifier(payload, mapped).predict_proba(X_check)
    error = float(np.max(np.abs(expected - actual))) if len(X_check) else 0.0
    if not error <= PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX probabilities differ from scikit-learn's by up to {error:.2e} (limit {PARITY_TOLERANCE:.0e}); "
            "the model was not logged. Features with very large magnitudes lose precision in float32: rescale them"
        )
    return payload, mapped, error


def _onnx_frame(X: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """The frame skl2onnx infers input types from: float32 numbers, strings."""
    return pd.DataFrame(
        {
            feature.name: X[feature.name].astype(np.float32 if feature.type == "number" else object)
            for feature in features
        }
    )
