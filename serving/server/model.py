"""The model a server holds: one verified version, immutable, swapped whole on reload."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.server.inputs import FeatureBatch, InputSchema
from toolkit.bundle.card import ModelCard
from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.publishing.manifest import Manifest
from toolkit.training.evaluation import predict_labels

__all__ = ["LoadedModel", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """Class probabilities (one column per class, in `classes` order) and the decided label of each row."""

    probabilities: np.ndarray
    labels: list[str | int]


@dataclass(frozen=True)
class LoadedModel:
    """A verified version of a model, ready to predict.

    Requests take a reference to one `LoadedModel` and use only it, so a reload that swaps the server's
    reference never changes the model under a request in flight.
    """

    name: str
    version: str
    manifest_sha256: str
    manifest: Manifest
    card: ModelCard
    classifier: OnnxClassifier
    schema: InputSchema

    @property
    def identity(self) -> tuple[str, str]:
        """What a pointer names: the version and its manifest's SHA-256."""
        return self.version, self.manifest_sha256

    @property
    def threshold(self) -> float | None:
        """The stored decision threshold of a binary model; None for multiclass models."""
        threshold = self.manifest.threshold
        return threshold.value if threshold is not None and len(self.manifest.classes) == 2 else None

    def predict(self, batch: FeatureBatch) -> Prediction:
        """Probabilities, and labels decided as in evaluation: the positive class at or above the threshold."""
        probabilities = self.classifier.predict_proba_columns(batch.columns)
        labels = predict_labels(probabilities, self.manifest.classes, self.threshold)
        return Prediction(probabilities, labels.tolist())
