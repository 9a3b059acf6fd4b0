"""MLflow's scoring protocol (`POST /invocations`), so that clients of `mlflow models serve` work unchanged.

Request: a JSON object with exactly one of
- `dataframe_split`: `{"columns": [names], "data": [[row], ...]}` (`index` is ignored);
- `dataframe_records`: `[{name: value}, ...]`;
- `instances` or `inputs`: records as above, or columns `{name: [values]}`.
`params` and other keys are ignored, as MLflow does for a model without parameters.

Response: `{"predictions": [[p per class], ...]}` as MLflow gives for our models (their pyfunc predicts
probabilities), plus `labels` (decided with the stored threshold) and `classes`. Errors use MLflow's
shape: `{"error_code": "BAD_REQUEST", "message": "..."}`.
"""

from __future__ import annotations

from typing import Any

from serving.server.inputs import FeatureBatch, InputSchema, RequestError
from serving.server.model import LoadedModel, Prediction

__all__ = ["FORMATS", "error_body", "parse_request", "response_body"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# MLflow's error codes (its `databricks_pb2.ErrorCode` names) for the statuses this server answers.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


def parse_request(document: Any, schema: InputSchema) -> FeatureBatch:
    """The batch a scoring request carries, validated against the model's schema."""
    if not isinstance(document, dict):
        raise RequestError(400, f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}")
    present = [key for key in FORMATS if key in document]
    if len(present) != 1:
        found = f"found {', '.join(present)}" if present else f"found keys {', '.join(map(repr, document)) or 'none'}"
        raise RequestError(400, f"the body must have exactly one of {', '.join(FORMATS)}; {found}")
    key = present[0]
    payload = document[key]
    if key == "dataframe_split":
        if not isinstance(payload, dict) or "columns" not in payload or "data" not in payload:
            raise RequestError(400, 'dataframe_split must be {"columns": [feature names], "data": [[row values]]}')
        return schema.batch_from_rows(payload["columns"], payload["data"])
    if key == "dataframe_records" or isinstance(payload, list):
        if isinstance(payload, list) and payload and not isinstance(payload[0], dict):
            raise RequestError(
                400, f"{key} must be records ({{name: value}} per row) or columns ({{name: [values]}}), not bare arrays"
            )
        return schema.batch_from_records(payload)
    return schema.batch_from_columns(payload)


def response_body(model: LoadedModel, prediction: Prediction) -> dict[str, Any]:
    """MLflow's `predictions` (class probabilities per row), with our labels and class order beside them."""
    return {"predictions": prediction.probabilities, "labels": prediction.labels, "classes": model.manifest.classes}


def error_body(status: int, message: str) -> dict[str, str]:
    """An error in MLflow's shape."""
    return {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message}
