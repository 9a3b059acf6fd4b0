"""The Open Inference Protocol v2 (KServe, Triton, Seldon clients), JSON form.

Inference request: `{"id"?, "parameters"?, "inputs": [tensor, ...], "outputs"?: [{"name": ...}]}` where a
tensor is `{"name", "shape", "datatype", "data"}` and `data` is row-major, flat or nested. Two layouts:
- one tensor per feature, named after it, shape `[N]` or `[N, 1]`: `BYTES` for text features, a numeric
  or `BOOL` datatype for number features;
- for models whose features are all numbers, one tensor of shape `[N, F]` whose columns are the features
  in the model card's order (the metadata lists them).
Numbers may be `null` (a missing value). The response's outputs are `probabilities` (`FP64`, `[N, C]`,
classes in metadata order) and `label` (`[N]`, decided with the stored threshold). Errors: `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.server.inputs import FeatureBatch, InputSchema, RequestError
from serving.server.model import LoadedModel, Prediction

__all__ = ["OUTPUTS", "error_body", "model_metadata", "parse_request", "response_body"]

NUMERIC_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)
TEXT_DATATYPE = "BYTES"
PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUTS = (PROBABILITIES, LABEL)
PLATFORM = "onnxruntime_onnx"


def parse_request(document: Any, schema: InputSchema) -> tuple[FeatureBatch, tuple[str, ...]]:
    """The batch an inference request carries and the outputs it asks for (all of them by default)."""
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise RequestError(400, 'the body must be a JSON object with "inputs": a non-empty array of tensors')
    tensors = [_tensor(index, tensor) for index, tensor in enumerate(document["inputs"])]
    outputs = _requested_outputs(document.get("outputs"))
    if len(tensors) == 1 and tensors[0][0] not in schema.by_name and len(tensors[0][1]) == 2:
        return _matrix_batch(tensors[0], schema), outputs
    names = [name for name, _, _, _ in tensors]
    schema.check_names(names, where="the inputs")
    rows = {name: shape[0] for name, shape, _, _ in tensors}
    if len(set(rows.values())) > 1:
        raise RequestError(400, f"the input tensors have different numbers of rows: {sorted(set(rows.values()))}")
    schema.check_rows(rows[names[0]])
    columns = {}
    for name, shape, datatype, data in tensors:
        if len(shape) == 2 and shape[1] != 1:
            raise RequestError(400, f"input {name!r} has shape {shape}: a feature's tensor is [N] or [N, 1]")
        expected = "number" if datatype in NUMERIC_DATATYPES else "string"
        if schema.by_name[name].type != expected:
            wanted = "a numeric datatype" if schema.by_name[name].type == "number" else TEXT_DATATYPE
            raise RequestError(400, f"input {name!r} has datatype {datatype}; this feature takes {wanted}")
        columns[name] = schema.column(name, _flat(name, data, shape[0]))
    return FeatureBatch(columns, rows[names[0]]), outputs


def _tensor(index: int, tensor: Any) -> tuple[str, list[int], str, Any]:
    if not isinstance(tensor, dict):
        raise RequestError(400, f"inputs[{index}] is not a tensor object with name, shape, datatype and data")
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if missing:
        raise RequestError(400, f"inputs[{index}] lacks {', '.join(missing)}")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str):
        raise RequestError(400, f"inputs[{index}].name must be a string")
    valid_shape = isinstance(shape, list) and all(type(size) is int and size >= 0 for size in shape)
    if not valid_shape or len(shape) not in (1, 2):
        raise RequestError(400, f"input {name!r} has shape {shape!r}: expected [N], [N, 1] or [N, features]")
    if not isinstance(datatype, str) or (datatype not in NUMERIC_DATATYPES and datatype != TEXT_DATATYPE):
        raise RequestError(400, f"input {name!r} has unknown datatype {datatype!r}")
    return name, shape, datatype, tensor["data"]


def _flat(name: str, data: Any, count: int) -> list[Any]:
    """The tensor's data as a flat row-major list of `count` values."""
    if not isinstance(data, list):
        raise RequestError(400, f"input {name!r}: data must be a JSON array")
    flat = data if not data or not isinstance(data[0], list) else [value for row in data for value in _row(name, row)]
    if len(flat) != count:
        raise RequestError(400, f"input {name!r} has {len(flat)} values where its shape says {count}")
    return flat


def _row(name: str, row: Any) -> list[Any]:
    if not isinstance(row, list):
        raise RequestError(400, f"input {name!r}: nested data must be arrays at every level")
    return row


def _matrix_batch(tensor: tuple[str, list[int], str, Any], schema: InputSchema) -> FeatureBatch:
    name, (rows, width), datatype, data = tensor
    if width != len(schema.names):
        raise RequestError(
            400, f"input {name!r} has {width} features per row where the model expects {len(schema.names)}"
        )
    if not schema.all_numeric or datatype not in NUMERIC_DATATYPES:
        raise RequestError(
            400,
            f"input {name!r}: a single [N, features] tensor needs a numeric datatype and an all-numeric model; "
            "send one tensor per feature instead",
        )
    schema.check_rows(rows)
    if not isinstance(data, list):
        raise RequestError(400, f"input {name!r}: data must be a JSON array")
    try:
        array = np.asarray(data)
    except ValueError:
        raise RequestError(400, f"input {name!r}: nested data has rows of different lengths") from None
    if array.dtype.kind in "biuf" and array.size == rows * width:
        matrix = array.reshape(rows, width)
        return FeatureBatch(
            {feature: schema.column(feature, matrix[:, j]) for j, feature in enumerate(schema.names)}, rows
        )
    flat = _flat(name, data, rows * width)
    return FeatureBatch(
        {feature: schema.column(feature, flat[j::width]) for j, feature in enumerate(schema.names)}, rows
    )


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return OUTPUTS
    if not isinstance(outputs, list) or not all(isinstance(item, dict) and "name" in item for item in outputs):
        raise RequestError(400, 'outputs must be an array of {"name": ...} objects')
    names = tuple(item["name"] for item in outputs)
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise RequestError(400, f"unknown output {unknown[0]!r}; this model has {', '.join(OUTPUTS)}")
    return names


def response_body(
    model: LoadedModel, prediction: Prediction, outputs: tuple[str, ...], request_id: Any
) -> dict[str, Any]:
    """The inference response: the requested outputs as flat row-major tensors."""
    rows, classes = prediction.probabilities.shape
    tensors: list[dict[str, Any]] = []
    for output in outputs:
        if output == PROBABILITIES:
            tensors.append(
                {
                    "name": PROBABILITIES,
                    "shape": [rows, classes],
                    "datatype": "FP64",
                    "data": prediction.probabilities.ravel(),
                }
            )
        else:
            tensors.append(
                {"name": LABEL, "shape": [rows], "datatype": _label_datatype(model), "data": prediction.labels}
            )
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": tensors}
    if isinstance(request_id, str):
        body["id"] = request_id
    return body


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the inputs in the model card's order and the outputs."""
    classes = len(model.manifest.classes)
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": feature.name, "datatype": "FP64" if feature.type == "number" else TEXT_DATATYPE, "shape": [-1, 1]}
            for feature in model.schema.features
        ],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, classes]},
            {"name": LABEL, "datatype": _label_datatype(model), "shape": [-1]},
        ],
        "parameters": {
            "classes": model.manifest.classes,
            "threshold": model.threshold,
        },
    }


def _label_datatype(model: LoadedModel) -> str:
    return "INT64" if all(isinstance(label, int) for label in model.manifest.classes) else TEXT_DATATYPE


def error_body(status: int, message: str) -> dict[str, str]:
    """An error in the protocol's shape."""
    return {"error": message}
