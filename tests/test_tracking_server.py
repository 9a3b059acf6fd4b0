"""Training, registry and promotion against a real MLflow tracking server (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STARTUP_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free loopback port, with its own store; stopped by its process group."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("mlflow server did not start in time")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_train_register_and_promote_through_a_tracking_server(tracking_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server, "MCT_HOME": str(tmp_path / "home")}

    def mct(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "toolkit", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    for _ in range(2):
        trained = mct("train", "--dataset", "iris", "--cv", "3", "--jobs", "1", "--register", "iris", "--json")
        assert trained.returncode == 0, trained.stderr
        document = json.loads(trained.stdout)  # MLflow's own run links must not reach stdout
        assert document["artifact_uri"].startswith("mlflow-artifacts:")
        assert document["run_url"].startswith(f"{tracking_server}/#/experiments/")
    assert mct("promote", "iris", "1").returncode == 0
    second = mct("promote", "iris", "2")
    assert second.returncode == 0, second.stderr
    assert "rows neither trained on" in second.stdout, "the gate read both runs' artifacts from the server"
    listed = mct("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"name": "iris", "versions": 2, "latest": "2", "aliases": {"champion": "2"}, "description": None}
    ]
    assert not (tmp_path / "home" / "mlflow.db").exists(), "nothing is written to the local store"
