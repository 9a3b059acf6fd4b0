"""The model server: real `mct serve` processes on 127.0.0.1 against the three emulated clouds.

One module fixture publishes a model and starts a server per cloud (`tests.server_fixtures`); this module
adds a server with a token and drill mode, one for a model not published yet, one started before its
store was reachable, and `mlflow models serve` on the same registered version, all started together.
A few in-process tests cover what needs no network: input rules, the reloader's decisions, text features.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.server.app import ServerOptions, create_app
from serving.server.inputs import InputSchema, RequestError
from serving.server.metrics import ServerMetrics
from serving.server.reloader import REFUSED_RETRY_SECONDS, ModelReloader
from tests.cloud_stores import local_store
from tests.server_fixtures import (
    POLL_SECONDS,
    PublishedClouds,
    ServerProcess,
    server_env,
    serving_clouds,  # noqa: F401  (the module fixture)
    wait_ready,
)
from toolkit.bundle.card import CARD_FILE, ONNX_FILE, FeatureSpec, ModelCard
from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.data import load_dataset
from toolkit.emulators import state_file
from toolkit.processes import free_ports
from toolkit.publishing.export import ExportedBundle
from toolkit.publishing.manifest import MANIFEST_FILE, FileEntry, Manifest, Pointer, pointer_key, version_prefix
from toolkit.publishing.publish import publish_bundle
from toolkit.storage import ObjectStore, file_sha256
from toolkit.storage.errors import StorageUnavailable
from toolkit.training.evaluation import predict_labels
from toolkit.training.options import build_options
from toolkit.training.trainer import train

TOKEN = "s3cret-token"
ROWS = 100
# `mlflow models serve` starts in 10-14 s alone; here it shares two cores with four other servers.
MLFLOW_START_SECONDS = 90.0


@dataclass
class Servers:
    """The module's servers beyond the fixture's three."""

    clouds: PublishedClouds
    secured: ServerProcess  # aws, with a token (from MCT_SERVING__TOKEN) and --drill-mode
    late: ServerProcess  # gcp, for a model that is published only during the test
    orphan: ServerProcess  # azure, started with no emulators recorded in its MCT_HOME
    orphan_home: Path
    mlflow: subprocess.Popen[bytes]
    mlflow_url: str
    mlflow_log: Path

    @property
    def late_model(self) -> str:
        return self.clouds.model + "-late"


@pytest.fixture(scope="module")
def servers(serving_clouds: PublishedClouds, data_home: Path) -> Iterator[Servers]:  # noqa: F811
    clouds = serving_clouds
    orphan_home = clouds.home / "orphan"
    orphan_home.mkdir()
    mlflow_port = free_ports(1)[0]
    mlflow_log = clouds.home / "mlflow-serve.log"
    bin_dir = str(Path(sys.executable).parent)
    mlflow_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{data_home / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    model_uri = f"models:/{clouds.model}/1"
    with mlflow_log.open("wb") as log:
        mlflow = subprocess.Popen(
            [
                str(Path(bin_dir) / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-p",
                str(mlflow_port),
                "-h",
                "127.0.0.1",
            ],
            env=mlflow_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: it runs uvicorn as a child, stopped with it
        )
    try:
        started = Servers(
            clouds=clouds,
            secured=clouds.start("aws", "--drill-mode", env=server_env(clouds.home, MCT_SERVING__TOKEN=TOKEN)),
            late=clouds.start("gcp", "--model", clouds.model + "-late"),
            orphan=clouds.start("azure", env=server_env(orphan_home)),
            orphan_home=orphan_home,
            mlflow=mlflow,
            mlflow_url=f"http://127.0.0.1:{mlflow_port}",
            mlflow_log=mlflow_log,
        )
        wait_ready(started.secured)
        wait_ready(started.late, "/v2/health/live")
        wait_ready(started.orphan, "/v2/health/live")
        yield started
    finally:
        if mlflow.poll() is None:
            os.killpg(mlflow.pid, signal.SIGTERM)  # the group we created for it, by its id
            try:
                mlflow.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(mlflow.pid, signal.SIGKILL)
                mlflow.wait(10)


# Requests and reference predictions.


@dataclass(frozen=True)
class Reference:
    """What the published bundle itself predicts, run directly with OnnxClassifier."""

    card: ModelCard
    classifier: OnnxClassifier
    frame: pd.DataFrame

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[Any]]:
        columns = {name: frame[name].to_numpy(dtype=float) for name in frame.columns}
        proba = self.classifier.predict_proba_columns(columns)
        threshold = self.card.threshold.value if self.card.threshold else None
        return proba, predict_labels(proba, self.card.classes, threshold).tolist()


@pytest.fixture(scope="module")
def reference(serving_clouds: PublishedClouds) -> Reference:  # noqa: F811
    directory = serving_clouds.bundles["1"].directory
    card = ModelCard.model_validate_json((directory / CARD_FILE).read_text())
    frame = load_dataset("breast_cancer").X.head(ROWS).copy()
    frame.iloc[5, 0] = np.nan  # a missing value, which the pipeline imputes
    return Reference(card, OnnxClassifier(directory / ONNX_FILE, card.features), frame)


def _values(frame: pd.DataFrame) -> list[list[float | None]]:
    return [[None if np.isnan(value) else float(value) for value in row] for row in frame.to_numpy()]


def _records(frame: pd.DataFrame) -> list[dict[str, float | None]]:
    return [dict(zip(frame.columns, row, strict=True)) for row in _values(frame)]


def mlflow_split(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": _values(frame)}}


def mlflow_records(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_records": _records(frame)}


def mlflow_instances(frame: pd.DataFrame) -> dict[str, Any]:
    return {"instances": _records(frame)}


def mlflow_inputs_columns(frame: pd.DataFrame) -> dict[str, Any]:
    values = _values(frame)
    return {"inputs": {name: [row[j] for row in values] for j, name in enumerate(frame.columns)}}


def v2_tensors(frame: pd.DataFrame) -> dict[str, Any]:
    values = _values(frame)
    return {
        "id": "request-1",
        "inputs": [
            {"name": name, "shape": [len(frame), 1], "datatype": "FP64", "data": [row[j] for row in values]}
            for j, name in enumerate(frame.columns)
        ],
    }


def v2_matrix(frame: pd.DataFrame) -> dict[str, Any]:
    shape = [len(frame), frame.shape[1]]
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP32", "data": _values(frame)}]}


MLFLOW_FORMATS = [mlflow_split, mlflow_records, mlflow_instances, mlflow_inputs_columns]
V2_FORMATS = [v2_tensors, v2_matrix]


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def predictions(body: dict[str, Any], v2: bool) -> tuple[np.ndarray, list[Any]]:
    """Probabilities and labels from either protocol's response."""
    if not v2:
        return np.asarray(body["predictions"]), body["labels"]
    outputs = {output["name"]: output for output in body["outputs"]}
    proba = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    return proba, outputs["label"]["data"]


def error_message(response: httpx.Response) -> str:
    """The message of an error in either protocol's shape."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    return body.get("message") or body.get("error") or ""


# Predictions: both protocols against the bundle, on every cloud.


@pytest.mark.parametrize("rows", [1, ROWS])
@pytest.mark.parametrize("build", MLFLOW_FORMATS + V2_FORMATS, ids=lambda build: build.__name__)
def test_both_protocols_predict_what_the_bundle_predicts(
    serving_clouds: PublishedClouds,  # noqa: F811
    reference: Reference,
    build: Callable[[pd.DataFrame], dict[str, Any]],
    rows: int,
) -> None:
    frame = reference.frame.head(rows)
    v2 = build in V2_FORMATS
    path = infer_path(serving_clouds.model) if v2 else "/invocations"
    response = httpx.post(serving_clouds.servers["gcp"].url + path, json=build(frame))
    assert response.status_code == 200, response.text
    proba, labels = predictions(response.json(), v2)
    expected_proba, expected_labels = reference.predict(frame)
    np.testing.assert_allclose(proba, expected_proba, atol=1e-6)
    assert labels == expected_labels
    assert response.headers["x-served-by"] == "gcp"
    assert response.headers["x-model-version"] == "1"


def test_labels_use_the_stored_threshold(serving_clouds: PublishedClouds, reference: Reference) -> None:  # noqa: F811
    threshold = reference.card.threshold
    assert threshold is not None and threshold.value != 0.5, "the test needs a tuned threshold"
    response = httpx.post(serving_clouds.servers["gcp"].url + "/invocations", json=mlflow_split(reference.frame))
    body = response.json()
    proba = np.asarray(body["predictions"])
    positive = reference.card.classes[1]
    assert body["classes"] == reference.card.classes
    assert [label == positive for label in body["labels"]] == list(proba[:, 1] >= threshold.value)


def test_every_cloud_serves_and_names_itself(serving_clouds: PublishedClouds, reference: Reference) -> None:  # noqa: F811
    body = mlflow_split(reference.frame.head(3))
    for cloud in ("aws", "gcp", "azure"):
        response = httpx.post(serving_clouds.servers[cloud].url + "/invocations", json=body)
        assert response.status_code == 200
        assert (response.headers["x-served-by"], response.headers["x-model-version"]) == (cloud, "1")


def test_the_mlflow_protocol_answers_what_mlflow_models_serve_answers(servers: Servers, reference: Reference) -> None:
    wait_ready(
        ServerProcess("mlflow", servers.mlflow_url, servers.mlflow, servers.mlflow_log), "/ping", MLFLOW_START_SECONDS
    )
    ours = servers.clouds.servers["aws"].url
    for build in (mlflow_split, mlflow_records, mlflow_instances):
        body = build(reference.frame)
        theirs = httpx.post(servers.mlflow_url + "/invocations", json=body, timeout=30)
        mine = httpx.post(ours + "/invocations", json=body)
        assert theirs.status_code == 200, theirs.text
        assert mine.status_code == 200, mine.text
        np.testing.assert_allclose(mine.json()["predictions"], theirs.json()["predictions"], atol=1e-5)


# Bad input: a 4xx JSON error that names the problem, on both protocols; never a 500.

BodyBuilder = Callable[[list[str]], Any]


@dataclass(frozen=True)
class Bad:
    """A bad request: its body (from the feature names, or raw bytes), the status and text expected."""

    body: BodyBuilder | bytes
    status: int
    message: str
    content_type: str = "application/json"


def split_with(edit: Callable[[list[str], list[Any]], Any]) -> BodyBuilder:
    """A one-row `dataframe_split` body, edited: `edit(columns, row)`."""

    def build(names: list[str]) -> dict[str, Any]:
        columns, row = list(names), [1.0] * len(names)
        edit(columns, row)
        return {"dataframe_split": {"columns": columns, "data": [row]}}

    return build


def tensors_with(edit: Callable[[list[dict[str, Any]]], Any]) -> BodyBuilder:
    """A one-row v2 body with a tensor per feature, edited: `edit(tensors)`."""

    def build(names: list[str]) -> dict[str, Any]:
        tensors = [{"name": name, "shape": [1], "datatype": "FP32", "data": [1.0]} for name in names]
        edit(tensors)
        return {"inputs": tensors}

    return build


def matrix_of(rows: int, width: int = 30) -> BodyBuilder:
    return lambda names: {
        "inputs": [{"name": "x", "shape": [rows, width], "datatype": "FP32", "data": [0.5] * (rows * width)}]
    }


def put(items: list[Any], index: int, value: Any) -> None:
    items[index] = value


OVER_LIMIT_BODY = b" " * (10 * 1024 * 1024 + 1)  # the default serving.max_body_bytes, plus one
COMMON_BAD = {
    "malformed JSON": Bad(b'{"inputs": [', 400, "the body is not valid JSON"),
    "absurd nesting": Bad(b"[" * 100_000, 400, "the body is not valid JSON"),
    "empty body": Bad(b"", 400, "the body is empty"),
    "wrong content type": Bad(b"a,b\n1,2\n", 415, "content type 'text/csv' is not supported", "text/csv"),
    "body over the size limit": Bad(OVER_LIMIT_BODY, 413, "over the limit of 10485760"),
}


def with_infinity(build: BodyBuilder) -> BodyBuilder:
    """Python's JSON writes `Infinity`, which MLflow's server parses; orjson would write null."""
    return lambda names: json.dumps(build(names)).encode()


MLFLOW_BAD = {
    "too few features": Bad(
        split_with(lambda columns, row: (columns.pop(), row.pop())), 400, "has 29 features where the model expects 30"
    ),
    "unknown name": Bad(split_with(lambda columns, row: put(columns, 0, "bogus")), 400, "unknown 'bogus'"),
    "missing name": Bad(
        lambda names: {"dataframe_records": [dict.fromkeys(names[1:], 1.0)]}, 400, "missing 'mean radius'"
    ),
    "non-numeric value": Bad(split_with(lambda columns, row: put(row, 2, "abc")), 400, 'row 0: "abc" is not a number'),
    "short row": Bad(split_with(lambda columns, row: row.pop()), 400, "row 0 has 29 values"),
    "empty batch": Bad(lambda names: {"dataframe_split": {"columns": names, "data": []}}, 400, "the batch is empty"),
    "batch over the limit": Bad(
        lambda names: {"inputs": {name: [0.5] * 10_001 for name in names}}, 413, "10001 rows, over the limit of 10000"
    ),
    "no format key": Bad(lambda names: {"data": []}, 400, "exactly one of dataframe_split"),
    "two format keys": Bad(lambda names: {"instances": [], "inputs": []}, 400, "found instances, inputs"),
    "rows without names": Bad(lambda names: {"inputs": [[1.0] * len(names)]}, 400, "not bare arrays"),
    "not an object": Bad(lambda names: [1, 2], 400, "must be a JSON object"),
    "infinite value": Bad(
        with_infinity(lambda names: {"instances": [{**dict.fromkeys(names, 1.0), names[0]: float("inf")}]}),
        400,
        "feature 'mean radius' row 0: the value is infinite",
    ),
}
V2_BAD = {
    "too few features": Bad(matrix_of(1, 29), 400, "29 features per row where the model expects 30"),
    "unknown name": Bad(tensors_with(lambda tensors: tensors[0].update(name="bogus")), 400, "unknown 'bogus'"),
    "missing name": Bad(tensors_with(lambda tensors: tensors.pop(0)), 400, "missing 'mean radius'"),
    "non-numeric value": Bad(
        tensors_with(lambda tensors: tensors[3].update(data=["abc"])), 400, 'row 0: "abc" is not a number'
    ),
    "text datatype for a number": Bad(
        tensors_with(lambda tensors: tensors[0].update(datatype="BYTES")), 400, "this feature takes a numeric datatype"
    ),
    "shape and data disagree": Bad(
        tensors_with(lambda tensors: tensors[0].update(data=[1.0, 2.0])), 400, "2 values where its shape says 1"
    ),
    "empty batch": Bad(matrix_of(0), 400, "the batch is empty"),
    "batch over the limit": Bad(matrix_of(10_001), 413, "10001 rows, over the limit of 10000"),
    "no inputs": Bad(lambda names: {"outputs": []}, 400, '"inputs": a non-empty array of tensors'),
    "unknown output": Bad(
        lambda names: {**tensors_with(lambda tensors: None)(names), "outputs": [{"name": "logits"}]},
        400,
        "unknown output 'logits'",
    ),
    "infinite value": Bad(
        with_infinity(tensors_with(lambda tensors: tensors[0].update(data=[float("inf")]))),
        400,
        "feature 'mean radius' row 0: the value is infinite",
    ),
}


def _bad_cases() -> list[Any]:
    return [
        pytest.param(protocol, bad, id=f"{protocol}-{name}")
        for protocol, table in (("mlflow", {**COMMON_BAD, **MLFLOW_BAD}), ("v2", {**COMMON_BAD, **V2_BAD}))
        for name, bad in table.items()
    ]


@pytest.mark.parametrize(("protocol", "bad"), _bad_cases())
def test_bad_input_gets_a_4xx_json_error_that_names_the_problem(
    serving_clouds: PublishedClouds,  # noqa: F811
    reference: Reference,
    protocol: str,
    bad: Bad,
) -> None:
    names = [feature.name for feature in reference.card.features]
    path = infer_path(serving_clouds.model) if protocol == "v2" else "/invocations"
    body = bad.body if isinstance(bad.body, bytes) else bad.body(names)
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = httpx.post(
        serving_clouds.servers["azure"].url + path, content=content, headers={"content-type": bad.content_type}
    )
    assert response.status_code == bad.status, response.text
    assert bad.message in error_message(response)
    key = "error" if protocol == "v2" else "error_code"
    assert key in response.json(), "each protocol's own error shape"


JSON_ODDITIES: list[Any] = [None, True, 0, -1.5, 1e308, "", "x", [], [None], {}, {"a": 1}, [[1.0]], "1.5"]


def _mutations(document: Any, rng: np.random.Generator) -> Iterator[Any]:
    """`document` with one value, anywhere in it, replaced by an oddity; or with one key dropped."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in list(children)[:3]:  # the first few of each level reach every kind of field
            walk(child, (*path, key))

    walk(document, ())
    for path in paths:
        for oddity in rng.choice(np.array(JSON_ODDITIES, dtype=object), size=3, replace=False):
            yield _replaced(document, path, oddity)
        if path:
            yield _replaced(document, path, _DROP)


_DROP = object()


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    if len(path) == 1 and value is _DROP:
        del copy[path[0]]
    else:
        copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


def test_no_client_input_causes_a_500(serving_clouds: PublishedClouds, reference: Reference) -> None:  # noqa: F811
    rng = np.random.default_rng(7)
    url, frame = serving_clouds.servers["azure"].url, reference.frame.head(2)
    targets = [("/invocations", build(frame)) for build in MLFLOW_FORMATS]
    targets += [(infer_path(serving_clouds.model), build(frame)) for build in V2_FORMATS]
    statuses = set()
    with httpx.Client(base_url=url) as client:
        for path, document in targets:
            for mutated in _mutations(document, rng):
                response = client.post(
                    path, content=orjson.dumps(mutated), headers={"content-type": "application/json"}
                )
                assert response.status_code < 500, (path, mutated, response.text)
                statuses.add(response.status_code)
    assert statuses >= {200, 400}


def test_an_unknown_model_name_is_404_on_v2(serving_clouds: PublishedClouds, reference: Reference) -> None:  # noqa: F811
    url = serving_clouds.servers["azure"].url
    response = httpx.post(url + infer_path("no-such-model"), json=v2_matrix(reference.frame.head(1)))
    assert response.status_code == 404
    assert f"this server serves '{serving_clouds.model}'" in error_message(response)
    assert httpx.get(url + "/v2/models/no-such-model/ready").status_code == 404


# Authentication, metrics, drill mode.


def test_prediction_routes_need_the_token_and_health_routes_do_not(servers: Servers, reference: Reference) -> None:
    url, model = servers.secured.url, servers.clouds.model
    requests = [
        ("POST", "/invocations", mlflow_split(reference.frame.head(2))),
        ("POST", infer_path(model), v2_matrix(reference.frame.head(2))),
        ("GET", f"/v2/models/{model}", None),
    ]
    for method, path, body in requests:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = httpx.request(method, url + path, json=body, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert "bearer token" in error_message(refused)
            assert refused.headers["www-authenticate"] == "Bearer"
        allowed = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200, allowed.text
    for path in ("/ping", "/health", "/version", "/v2/health/live", "/v2/health/ready", f"/v2/models/{model}/ready"):
        assert httpx.get(url + path).status_code == 200, path
    assert httpx.get(url + "/metrics").status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_latency_version_and_reloads(
    serving_clouds: PublishedClouds,  # noqa: F811
    reference: Reference,
) -> None:
    url = serving_clouds.servers["gcp"].url
    httpx.post(url + "/invocations", json=mlflow_split(reference.frame.head(3)))
    httpx.post(url + "/invocations", content=b"{", headers={"content-type": "application/json"})
    response = httpx.get(url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = {"method": "POST", "route": "/invocations", "status": "200"}
    assert metric(text, "mct_server_requests_total", **ok) >= 1
    assert metric(text, "mct_server_requests_total", **{**ok, "status": "400"}) >= 1
    assert metric(text, "mct_server_request_duration_seconds_count", **ok) >= 1
    assert metric(text, "mct_server_request_duration_seconds_bucket", **ok, le="+Inf") >= 1
    assert metric(text, "mct_server_model_version") == 1.0
    assert metric(text, "mct_server_model_ready") == 1.0
    assert metric(text, "mct_server_reloads_total") == 1.0
    assert "mct_server_reload_failures_total" in text
    assert metric(text, "mct_server_predicted_rows_total", protocol="mlflow") >= 3


def test_drill_faults_exist_only_in_drill_mode(servers: Servers, reference: Reference) -> None:
    plain = servers.clouds.servers["aws"].url
    assert httpx.post(plain + "/drill/fault", json={"errors": True}).status_code == 404
    url, auth = servers.secured.url, {"Authorization": f"Bearer {TOKEN}"}
    body = mlflow_split(reference.frame.head(1))

    def drill(settings: Any) -> httpx.Response:
        return httpx.post(url + "/drill/fault", json=settings, headers=auth)

    assert httpx.post(url + "/drill/fault", json={"errors": True}).status_code == 401
    assert drill({"errors": "yes"}).status_code == 400
    try:
        assert drill({"errors": True}).json() == {"errors": True, "delay_seconds": 0.0}
        failed = httpx.post(url + "/invocations", json=body, headers=auth)
        assert failed.status_code == 500 and "injected" in error_message(failed)
        assert httpx.get(url + "/v2/health/ready").status_code == 200, "health routes are not affected"
        drill({"delay_seconds": 0.4})
        started = time.monotonic()
        assert httpx.post(url + "/invocations", json=body, headers=auth).status_code == 200
        assert time.monotonic() - started >= 0.4
    finally:
        assert drill({}).json() == {"errors": False, "delay_seconds": 0.0}
    started = time.monotonic()
    assert httpx.post(url + "/invocations", json=body, headers=auth).status_code == 200
    assert time.monotonic() - started < 0.4


# Readiness and hot reload.


def test_not_ready_until_a_model_is_published_then_ready(servers: Servers, reference: Reference) -> None:
    url, model, clouds = servers.late.url, servers.late_model, servers.clouds
    for path in ("/ping", "/v2/health/ready", f"/v2/models/{model}/ready"):
        response = httpx.get(url + path)
        assert response.status_code == 503, path
        assert "no model published yet" in response.json()["reason"]
    assert httpx.get(url + "/v2/health/live").status_code == 200
    refused = httpx.post(url + "/invocations", json=mlflow_split(reference.frame.head(1)))
    assert refused.status_code == 503 and "no model loaded yet" in error_message(refused)
    renamed = _renamed_bundle(clouds.bundles["1"], model, clouds.home / "late-bundle")
    assert all(result.ok for result in publish_bundle(renamed, {"gcp": clouds.stores["gcp"]}))
    wait_ready(servers.late, timeout=10 * POLL_SECONDS + 5)
    response = httpx.post(url + infer_path(model), json=v2_matrix(reference.frame.head(1)))
    assert response.status_code == 200 and response.headers["x-model-version"] == "1"


def _renamed_bundle(bundle: ExportedBundle, model: str, directory: Path) -> ExportedBundle:
    """The same files published under another model name."""
    shutil.copytree(bundle.directory, directory)
    manifest = bundle.manifest.model_copy(update={"model": model})
    (directory / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    return ExportedBundle(directory, manifest)


def test_a_server_started_before_its_store_is_reachable_waits_then_serves(servers: Servers) -> None:
    response = httpx.get(servers.orphan.url + "/v2/health/ready")
    assert response.status_code == 503
    assert "emulators are not running" in response.json()["reason"]
    state = state_file(servers.orphan_home)
    state.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(state_file(servers.clouds.home), state)  # the emulators "come up" for it
    wait_ready(servers.orphan, timeout=10 * POLL_SECONDS + 5)
    assert metric(httpx.get(servers.orphan.url + "/metrics").text, "mct_server_poll_failures_total") >= 1


def test_a_new_version_is_served_within_two_poll_intervals_without_failing_requests(
    serving_clouds: PublishedClouds,  # noqa: F811
    reference: Reference,
) -> None:
    url, body = serving_clouds.servers["aws"].url, mlflow_split(reference.frame.head(5))
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                response = client.post(url + "/invocations", json=body)
                seen.append((time.monotonic(), response.status_code, response.headers.get("x-model-version", "")))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        results = publish_bundle(serving_clouds.bundles["2"], {"aws": serving_clouds.stores["aws"]})
        moved = time.monotonic()
        assert results[0].pointer == "moved"
        deadline = moved + 10 * POLL_SECONDS
        while time.monotonic() < deadline and not any(version == "2" for _, _, version in seen):
            time.sleep(0.02)
        time.sleep(0.2)  # a few requests on the new version too
    finally:
        stop.set()
        asker.join()
    first_v2 = next(at for at, _, version in seen if version == "2")
    # Two poll intervals, plus the time to fetch, verify and load about 100 kB from the emulator.
    assert first_v2 - moved < 2 * POLL_SECONDS + 0.5, f"v2 served {first_v2 - moved:.2f} s after the pointer moved"
    assert {status for _, status, _ in seen} == {200}, "no request failed during the swap"
    versions = [version for _, _, version in seen]
    assert versions == sorted(versions) and set(versions) == {"1", "2"}, "never back to the old version"
    text = httpx.get(url + "/metrics").text
    assert metric(text, "mct_server_reloads_total") == 2.0
    assert metric(text, "mct_server_model_version") == 2.0


def _tampered_onnx(clouds: PublishedClouds, store: ObjectStore) -> None:
    """Version 2's files, its model.onnx altered, then the pointer: as an attacker with write access would."""
    bundle, prefix = clouds.bundles["2"], version_prefix(clouds.model, "2")
    for entry in bundle.manifest.files:
        store.put(prefix + entry.path, b"not a model" if entry.path == ONNX_FILE else bundle.directory / entry.path)
    store.put(prefix + MANIFEST_FILE, bundle.directory / MANIFEST_FILE)
    _write_pointer(store, clouds.model, prefix + MANIFEST_FILE, file_sha256(bundle.directory / MANIFEST_FILE))


def _wrong_manifest_hash(clouds: PublishedClouds, store: ObjectStore) -> None:
    """A pointer to a new version whose manifest hash does not match the manifest."""
    bundle, prefix = clouds.bundles["2"], version_prefix(clouds.model, "2")
    for path in bundle.files():
        store.put(prefix + path.name, path)
    _write_pointer(store, clouds.model, prefix + MANIFEST_FILE, "0" * 64)


def _write_pointer(store: ObjectStore, model: str, manifest: str, sha256: str) -> None:
    pointer = Pointer(
        model=model,
        alias="champion",
        version="2",
        manifest=manifest,
        manifest_sha256=sha256,
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store.put(pointer_key(model, "champion"), pointer.to_bytes())


@pytest.mark.parametrize(
    ("cloud", "tamper", "logged"),
    [
        ("gcp", _tampered_onnx, "model.onnx does not match its manifest hash"),
        ("azure", _wrong_manifest_hash, "does not match the SHA-256 in the pointer"),
    ],
)
def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(
    serving_clouds: PublishedClouds,  # noqa: F811
    reference: Reference,
    cloud: str,
    tamper: Callable[[PublishedClouds, ObjectStore], None],
    logged: str,
) -> None:
    server = serving_clouds.servers[cloud]
    failures = metric(httpx.get(server.url + "/metrics").text, "mct_server_reload_failures_total", reason="rejected")
    tamper(serving_clouds, serving_clouds.stores[cloud])
    deadline = time.monotonic() + 10 * POLL_SECONDS + 5
    while time.monotonic() < deadline:
        text = httpx.get(server.url + "/metrics").text
        if metric(text, "mct_server_reload_failures_total", reason="rejected") > failures:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the tampered version was not refused:\n{server.log_text()}")
    response = httpx.post(server.url + "/invocations", json=mlflow_split(reference.frame.head(2)))
    assert response.status_code == 200 and response.headers["x-model-version"] == "1"
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    assert metric(text, "mct_server_model_version") == 1.0
    assert logged in server.log_text()


# In-process: input rules with a text feature, the reloader's decisions, a model with a text feature.

MIXED = InputSchema(
    (
        FeatureSpec(name="age", type="number", onnx_input="age"),
        FeatureSpec(name="colour", type="string", onnx_input="colour"),
    ),
    missing_category="__missing__",
    max_rows=3,
)


def test_inputs_map_nulls_to_nan_and_to_the_missing_category() -> None:
    batch = MIXED.batch_from_rows(["colour", "age"], [["red", 1], [None, None], ["blue", True]])
    assert batch.rows == 3
    np.testing.assert_array_equal(batch.columns["age"], np.array([1.0, np.nan, 1.0], dtype=np.float32))
    assert batch.columns["colour"].tolist() == ["red", "__missing__", "blue"]
    records = MIXED.batch_from_records([{"age": 2.5, "colour": None}])
    assert records.columns["colour"].tolist() == ["__missing__"]


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda: MIXED.batch_from_rows(["age", "colour"], [[1, 2]]), 400, "feature 'colour' row 0: 2 is not text"),
        (lambda: MIXED.batch_from_rows(["age", "age"], [[1, 2]]), 400, "duplicated 'age'; missing 'colour'"),
        (lambda: MIXED.batch_from_records([{"age": [1], "colour": "x"}]), 400, "[1] is not a number"),
        (lambda: MIXED.batch_from_records([{"age": 1, "colour": "x"}] * 4), 413, "4 rows, over the limit of 3"),
        (lambda: MIXED.batch_from_columns({"age": [1, 2], "colour": ["x"]}), 400, "different lengths"),
        (lambda: MIXED.batch_from_rows([["age"], "colour"], [[1, "x"]]), 400, "must be strings"),
    ],
)
def test_inputs_refuse_what_the_model_cannot_take(call: Callable[[], Any], status: int, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        call()
    assert caught.value.status == status
    assert message in caught.value.message


class FlakyStore:
    """Opens a store only after failing `failures` times, as an unreachable cloud would."""

    def __init__(self, store: ObjectStore, failures: int) -> None:
        self.store, self.failures = store, failures

    def __call__(self) -> ObjectStore:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable(f"{self.store.url}: no answer (injected)")
        return self.store


def test_the_reloader_refuses_bad_versions_and_retries_them_later(
    serving_clouds: PublishedClouds,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = local_store(tmp_path / "cloud")
    now = [0.0]
    metrics = ServerMetrics()
    reloader = ModelReloader(
        FlakyStore(store, failures=1),
        serving_clouds.model,
        poll_seconds=1,
        max_rows=10,
        metrics=metrics,
        clock=lambda: now[0],
    )
    reloader.poll()
    assert reloader.current is None and "cannot read the store" in (reloader.not_ready_reason or "")
    reloader.poll()
    assert reloader.current is None and "no model published yet" in (reloader.not_ready_reason or "")
    publish_bundle(serving_clouds.bundles["1"], {"local": store})
    reloader.poll()
    assert reloader.current is not None and reloader.current.version == "1"
    _tampered_onnx(serving_clouds, store)
    reloader.poll()
    reloader.poll()
    assert reloader.current.version == "1"
    assert metrics.reload_failures.labels(reason="rejected")._value.get() == 1, "refused once, not on every poll"
    store.put(version_prefix(serving_clouds.model, "2") + ONNX_FILE, serving_clouds.bundles["2"].directory / ONNX_FILE)
    now[0] += REFUSED_RETRY_SECONDS + 1  # repaired in place: tried again after the back-off
    reloader.poll()
    assert reloader.current.version == "2"
    assert metrics.poll_failures._value.get() == 1 and metrics.reloads._value.get() == 2


def test_a_model_with_a_text_feature_serves_missing_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colours = rng.choice(["red", "green", "blue"], size=240)
    x = rng.normal(size=240)
    frame = pd.DataFrame({"x": x, "colour": colours, "y": ((x + (colours == "red") * 1.5) > 0.5).astype(int)})
    frame.loc[::17, "colour"] = None
    frame.to_csv(tmp_path / "data.csv", index=False)
    result = train(
        load_dataset(str(tmp_path / "data.csv"), target="y"), build_options(n_jobs=1, cv_folds=3, space={"C": [1.0]})
    )
    bundle = _local_bundle(result.onnx_model, result.card.model_copy(update={"model_name": "colours"}), tmp_path / "b")
    store = local_store(tmp_path / "cloud")
    publish_bundle(bundle, {"local": store})
    reloader = ModelReloader(lambda: store, "colours", poll_seconds=1, max_rows=100, metrics=ServerMetrics())
    reloader.poll()
    rows = [{"x": 0.3, "colour": "red"}, {"x": 0.3, "colour": None}, {"x": None, "colour": "blue"}]
    tensors = [
        {"name": "x", "shape": [3], "datatype": "FP64", "data": [0.3, 0.3, None]},
        {"name": "colour", "shape": [3, 1], "datatype": "BYTES", "data": [["red"], [None], ["blue"]]},
    ]
    mlflow, v2 = asyncio.run(
        _post_both(
            create_app(reloader, ServerOptions("local")),
            ("/invocations", {"dataframe_records": rows}),
            (infer_path("colours"), {"inputs": tensors}),
        )
    )
    assert mlflow.status_code == 200, mlflow.text
    assert v2.status_code == 200, v2.text
    assert mlflow.headers["x-served-by"] == "local"
    expected = OnnxClassifier(result.onnx_model, result.card.features).predict_proba_columns(
        {"x": [0.3, 0.3, np.nan], "colour": ["red", result.card.missing_category, "blue"]}
    )
    np.testing.assert_allclose(predictions(mlflow.json(), v2=False)[0], expected, atol=1e-6)
    np.testing.assert_allclose(predictions(v2.json(), v2=True)[0], expected, atol=1e-6)
    assert predictions(v2.json(), v2=True)[1] == predictions(mlflow.json(), v2=False)[1]


async def _post_both(app: Any, *requests: tuple[str, dict[str, Any]]) -> list[httpx.Response]:
    """Requests to an app in this process (no lifespan: the test polls the reloader itself)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as client:
        return [await client.post(path, json=body) for path, body in requests]


def _local_bundle(onnx_model: bytes, card: ModelCard, directory: Path) -> ExportedBundle:
    directory.mkdir()
    (directory / ONNX_FILE).write_bytes(onnx_model)
    (directory / CARD_FILE).write_text(card.model_dump_json())
    files = [
        FileEntry(path=name, sha256=file_sha256(directory / name), size=(directory / name).stat().st_size)
        for name in (ONNX_FILE, CARD_FILE)
    ]
    manifest = Manifest(
        model="colours",
        version="1",
        run_id="local",
        registered_at=card.created_at,
        task=card.task,
        classes=card.classes,
        positive_class=card.positive_class,
        features=[f.name for f in card.features],
        threshold=card.threshold,
        files=files,
    )
    (directory / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    return ExportedBundle(directory, manifest)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cloud", "nowhere"], "unknown cloud 'nowhere'; configured: aws, gcp, azure"),
        (["--cloud", "aws", "--poll-seconds", "0"], "--poll-seconds must be positive"),
        (["--cloud", "aws", "--log-level", "loud"], "--log-level must be one of debug, info, warning, error"),
        ([], "Missing option '--cloud'"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(mct: Any, args: list[str], message: str) -> None:
    result = mct("serve", *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
