"""The model card: everything known about a trained model, as JSON for machines and Markdown for people."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DatasetSummary", "FeatureSpec", "ModelCard", "ThresholdSpec"]

CARD_FILE = "model_card.json"
CARD_MARKDOWN_FILE = "model_card.md"
ONNX_FILE = "model.onnx"


class FeatureSpec(BaseModel):
    """One input column: its name in the data, its kind, and the ONNX input that receives it."""

    name: str
    type: Literal["number", "string"]
    onnx_input: str


class ThresholdSpec(BaseModel):
    """The binary decision threshold on the positive class's probability, and how it was chosen."""

    value: float
    strategy: str
    f1_optimal: float
    youden: float


class DatasetSummary(BaseModel):
    name: str
    fingerprint: str
    rows: int
    train_rows: int
    holdout_rows: int
    class_counts: dict[str, int]


class ModelCard(BaseModel):
    """Facts about one trained model; the bundle's contract with serving."""

    schema_version: int = 1
    model_name: str | None = None
    created_at: str
    task: Literal["binary", "multiclass"]
    classes: list[str | int]
    positive_class: str | int | None = None
    features: list[FeatureSpec]
    missing_category: str
    threshold: ThresholdSpec | None = None
    dataset: DatasetSummary
    scoring: str
    cv_score: float
    train_score: float
    metrics: dict[str, float]
    metrics_at_default_threshold: dict[str, float] = Field(default_factory=dict)
    best_params: dict[str, Any]
    options: dict[str, Any]
    warnings: list[str]
    onnx_parity_max_error: float
    versions: dict[str, str]

    def to_markdown(self) -> str:
        """A human-readable summary of the card."""
        lines = [
            f"# Model card: {self.model_name or 'unregistered model'}",
            "",
            f"- Task: {self.task}, classes {', '.join(map(str, self.classes))}",
            f"- Data: `{self.dataset.name}`, {self.dataset.rows} rows "
            f"({self.dataset.train_rows} train, {self.dataset.holdout_rows} holdout), "
            f"fingerprint `{self.dataset.fingerprint[:16]}`",
            f"- Features ({len(self.features)}): {', '.join(feature.name for feature in self.features)}",
            f"- Cross-validated {self.scoring}: {self.cv_score:.4f}; on training data {self.train_score:.4f}",
        ]
        if self.threshold is not None:
            lines.append(
                f"- Decision threshold for `{self.positive_class}`: {self.threshold.value:.4f} "
                f"({self.threshold.strategy}; F1-optimal {self.threshold.f1_optimal:.4f}, "
                f"Youden's J {self.threshold.youden:.4f})"
            )
        lines += ["", "## Holdout metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4f} |" for name, value in self.metrics.items()]
        lines += ["", "## Warnings", ""]
        lines += [f"- {warning}" for warning in self.warnings] or ["- none"]
        lines += ["", "## Best parameters", ""]
        lines += [f"- `{name}` = {value}" for name, value in self.best_params.items()] or ["- defaults"]
        return "\n".join(lines) + "\n"
