"""The model bundle: what leaves MLflow for serving (an ONNX model and its model card), no pickle.

`card` is light; `onnx_export` (skl2onnx) and `onnx_model` (onnxruntime) are imported where used.
"""

from toolkit.bundle.card import FeatureSpec, ModelCard, ThresholdSpec

__all__ = ["FeatureSpec", "ModelCard", "ThresholdSpec"]
