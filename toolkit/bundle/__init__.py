"""The model bundle: what leaves MLflow for serving (an ONNX model and its model card), no pickle."""

from toolkit.bundle.card import FeatureSpec, ModelCard, ThresholdSpec
from toolkit.bundle.onnx_export import export_onnx
from toolkit.bundle.onnx_model import OnnxClassifier

__all__ = ["FeatureSpec", "ModelCard", "OnnxClassifier", "ThresholdSpec", "export_onnx"]
