"""The `mct` command line: in-process with Click's runner, and as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from toolkit.clouds import cloud_store
from toolkit.config import load_settings
from toolkit.emulators import stop_emulators

FAST = ["--cv", "3", "--param", "C=1"]


def _single_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_train_prints_metrics_and_registers(mct, model_name: str) -> None:
    result = mct("train", "--dataset", "breast_cancer", *FAST, "--register", model_name)
    assert result.exit_code == 0, result.output
    for text in ("roc_auc", "specificity", "at 0.5", "confusion matrix", "ONNX export verified", "registered"):
        assert text in result.stdout
    assert "multicollinearity" in result.stdout


def test_train_json_is_machine_readable(mct) -> None:
    result = mct("train", "--dataset", "iris", *FAST, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["task"] == "multiclass"
    assert document["metrics"]["accuracy"] >= 0.9
    assert len(document["confusion_matrix"]) == 3
    assert document["version"] is None


def test_imbalance_output_shows_the_minority_recall_gain(mct) -> None:
    recall = {}
    for imbalance in ("none", "class-weight"):
        result = mct("train", "--dataset", "imbalanced", *FAST, "--imbalance", imbalance, "--json")
        recall[imbalance] = json.loads(result.stdout)["metrics_at_0.5"]["recall"]
    assert recall["class-weight"] > recall["none"]


def test_models_promote_show_and_rollback(mct, model_name: str) -> None:
    for _ in range(2):
        assert mct("train", "--dataset", "breast_cancer", *FAST, "--register", model_name).exit_code == 0
    promoted = mct("promote", model_name, "1")
    assert promoted.exit_code == 0 and "promoted" in promoted.stdout
    second = mct("promote", model_name, "2", "--json")
    assert json.loads(second.stdout)["previous"] == "1"
    listing = json.loads(mct("models", "list", "--json").stdout)
    assert {
        "name": model_name,
        "versions": 2,
        "latest": "2",
        "aliases": {"champion": "2"},
        "description": None,
    } in listing
    rolled = mct("rollback", model_name)
    assert rolled.exit_code == 0 and "from v2 to v1" in rolled.stdout
    shown = mct("models", "show", model_name)
    assert "champion history" in shown.stdout and "rollback" in shown.stdout


def test_a_refused_promotion_exits_1_with_both_figures(mct, model_name: str) -> None:
    mct("train", "--dataset", "breast_cancer", *FAST, "--register", model_name)
    line = _single_line_error(mct("promote", model_name, "1", "--min-auc", "0.9999"), code=1)
    assert "not promoted" in line and "< minimum 0.9999" in line
    forced = mct("promote", model_name, "1", "--min-auc", "0.9999", "--force", "--reason", "drill")
    assert forced.exit_code == 0 and "forced" in forced.stdout


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["train", "--dataset", "{tmp}/absent.csv", "--target", "y"], "does not exist"),
        (["train", "--dataset", "{empty}", "--target", "y"], "is empty"),
        (["train", "--dataset", "{good}", "--target", "label"], "target column 'label' is not in"),
        (["train", "--dataset", "{good}"], "needs --target"),
        (["train", "--dataset", "{constant}", "--target", "y"], "is constant"),
        (
            ["train", "--dataset", "breast_cancer", "--penalty", "l1", "--solver", "lbfgs"],
            "does not support penalty l1",
        ),
        (["train", "--dataset", "breast_cancer", "--penalty", "elasticnet", "--solver", "liblinear"], "elasticnet"),
        (["train", "--dataset", "iris", "--solver", "liblinear"], "cannot fit a multinomial model"),
        (["train", "--dataset", "breast_cancer", "--multiclass", "ovr"], "applies to multiclass targets"),
        (["train", "--dataset", "breast_cancer", "--penalty", "l3"], "Invalid value for '--penalty'"),
        (["train", "--dataset", "breast_cancer", "--threshold", "2"], "strictly between 0 and 1"),
        (["train", "--dataset", "breast_cancer", "--param", "C"], "is not NAME=V1,V2"),
        (["train", "--dataset", "breast_cancer", "--param", "gamma=1"], "unknown search parameter 'gamma'"),
        (["train", "--dataset", "breast_cancer", "--scoring", "r2_score"], "unknown scoring 'r2_score'"),
        (["promote", "no-such-model", "1"], "no registered model named 'no-such-model'"),
        (["models", "show", "no-such-model"], "no registered model named 'no-such-model'"),
        (["rollback", "no-such-model"], "no registered model named 'no-such-model'"),
        (["train"], "Missing option '--dataset'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(mct, tmp_path: Path, args: list[str], message: str) -> None:
    files = {
        "{tmp}": str(tmp_path),
        "{empty}": str(tmp_path / "empty.csv"),
        "{good}": _csv(tmp_path, pd.DataFrame({"x": [1, 2, 3, 4], "y": [0, 1, 0, 1]}), "good.csv"),
        "{constant}": _csv(tmp_path, pd.DataFrame({"x": [1, 2, 3], "y": [5, 5, 5]}), "constant.csv"),
    }
    (tmp_path / "empty.csv").write_text("")
    for placeholder, value in files.items():
        args = [arg.replace(placeholder, value) for arg in args]
    assert message in _single_line_error(mct(*args))


def test_promoting_a_missing_version_exits_2(mct, model_name: str) -> None:
    mct("train", "--dataset", "breast_cancer", *FAST, "--register", model_name)
    assert f"'{model_name}' has no version 7" in _single_line_error(mct("promote", model_name, "7"))


def test_invalid_config_file_is_one_line(mct, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mct.toml"
    config.write_text("[promotion]\ntolerance = -1\n")
    monkeypatch.setenv("MCT_CONFIG", str(config))
    assert "invalid setting promotion.tolerance" in _single_line_error(mct("models", "list"))


def _run(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MCT_HOME": str(home), "MCT_TRAINING__N_JOBS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_python_m_toolkit_runs_the_cli_as_a_subprocess(tmp_path: Path) -> None:
    assert _run("--version", home=tmp_path).stdout.startswith("mct ")
    trained = _run("train", "--dataset", "wine", *FAST, "--register", "wine", "--json", home=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["version"] == "1"
    assert (tmp_path / "mlflow.db").is_file()
    failed = _run("train", "--dataset", "wine", "--penalty", "l1", "--solver", "sag", home=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "error: solver sag does not support penalty l1; use one of: liblinear, saga"
    ]


def test_the_demo_trains_promotes_publishes_and_verifies(tmp_path: Path) -> None:
    try:
        # Emulators that were running before the demo are left running, for the checks below.
        assert _run("emulators", "up", home=tmp_path).returncode == 0
        demo = _run("demo", "--drill-seconds", "6", home=tmp_path)
        assert demo.returncode == 0, demo.stderr
        drill = json.loads((tmp_path / "drill" / "report.json").read_text())
        assert [(s["scenario"], s["failed"]) for s in drill["scenarios"]] == [("kill-one", 0)]
        assert (tmp_path / "drill" / "timeline.png").stat().st_size > 0
        assert "mct ui" in demo.stdout
        assert "promoted breast_cancer v1 to champion" in demo.stdout
        auc = float(demo.stdout.split("holdout ROC AUC ")[1].split(";")[0])
        assert auc >= 0.99
        routed = demo.stdout.split("serve from every cloud behind the router")[1]
        assert "routed to" in routed
        assert {"aws", "gcp", "azure"} & set(routed.split()), "predictions name the cloud that answered"
        verified = _run("verify", "breast_cancer", "--json", home=tmp_path)
        assert verified.returncode == 0, verified.stderr
        clouds = json.loads(verified.stdout)["clouds"]
        assert [(cloud["cloud"], cloud["version"], cloud["status"]) for cloud in clouds] == [
            ("aws", "1", "OK"),
            ("gcp", "1", "OK"),
            ("azure", "1", "OK"),
        ]
        again = _run("publish", "breast_cancer", "--json", home=tmp_path)
        assert [cloud["pointer"] for cloud in json.loads(again.stdout)["clouds"]] == ["already current"] * 3
        tampered = tmp_path / "tampered.onnx"
        tampered.write_bytes(b"not a model")
        copied = _run("sync", str(tmp_path / "absent"), "gcp:models/breast_cancer/versions/1", home=tmp_path)
        assert copied.returncode == 2 and "does not exist" in copied.stderr
        overwrite = _run("sync", str(tmp_path), "azure:models/breast_cancer/versions/1", "--dry-run", home=tmp_path)
        assert overwrite.returncode == 0 and "would copy" in overwrite.stdout
        store = cloud_store(load_settings(home=tmp_path), "gcp", "models/breast_cancer/versions/1")
        store.put("model.onnx", tampered)
        caught = _run("verify", "breast_cancer", "--json", home=tmp_path)
        assert caught.returncode == 1
        statuses = {cloud["cloud"]: cloud["status"] for cloud in json.loads(caught.stdout)["clouds"]}
        assert statuses == {"aws": "OK", "gcp": "MISMATCH", "azure": "OK"}
    finally:
        stop_emulators(tmp_path)


def test_ui_without_a_tracking_store_says_what_to_run(tmp_path: Path) -> None:
    result = _run("ui", home=tmp_path / "empty", timeout=60)
    assert result.returncode == 2
    assert "run `mct demo` or `mct train` first" in result.stderr
