"""Real `mct serve` processes for tests: started on free 127.0.0.1 ports, awaited, stopped by PID.

`start_server` starts one `python -m toolkit serve` process; `wait_ready` waits for its readiness route.
The module-scoped fixture `serving_clouds` publishes a model (versions 1 and 2 registered, 1 published)
to the three emulated clouds and starts one server per cloud with a short poll interval. Use it from a
test module with `from tests.server_fixtures import serving_clouds  # noqa: F401`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from toolkit.clouds import cloud_stores, emulator_buckets
from toolkit.config import Settings, load_settings
from toolkit.data import load_dataset
from toolkit.emulators import ensure_emulators, stop_emulators
from toolkit.processes import free_ports
from toolkit.publishing.export import ExportedBundle, export_bundle
from toolkit.publishing.publish import publish_bundle
from toolkit.storage import ObjectStore
from toolkit.tracking.promotion import promote
from toolkit.tracking.runs import log_training
from toolkit.tracking.store import TrackingStore
from toolkit.tracking.store import open_store as open_tracking
from toolkit.training.options import build_options
from toolkit.training.trainer import train

__all__ = [
    "CLOUDS",
    "POLL_SECONDS",
    "PublishedClouds",
    "ServerProcess",
    "register_versions",
    "server_env",
    "serving_clouds",
    "start_server",
    "wait_ready",
]

CLOUDS = ("aws", "gcp", "azure")
# Short, so that hot-reload tests wait about a second; production's default is 5 s.
POLL_SECONDS = 0.5
# A server imports the toolkit, FastAPI and onnxruntime in about 3 s alone; several starting at once on
# a 2-core CI machine that is also running other tests take several times longer.
START_TIMEOUT_SECONDS = 90.0
# SIGTERM lets uvicorn finish requests in flight; a server still up after this is killed.
STOP_TIMEOUT_SECONDS = 10.0


@dataclass
class ServerProcess:
    """One `mct serve` process we started."""

    cloud: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM our process by its PID, then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a server subprocess: this one, with `home` as MCT_HOME and nothing reaching out."""
    inherited = {name: value for name, value in os.environ.items() if name != "MCT_SERVING__TOKEN"}
    return {
        **inherited,
        "MCT_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "ORT_DISABLE_TELEMETRY": "1",
        **extra,
    }


def start_server(
    cloud: str, home: Path, port: int, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> ServerProcess:
    """Start `python -m toolkit serve --cloud CLOUD` on 127.0.0.1:`port` (not waiting for it), log in `home`."""
    log = home / f"serve-{cloud}-{port}.log"
    command = [sys.executable, "-m", "toolkit", "serve", "--cloud", cloud, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [*command, *args],
            env=env or server_env(home),
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # an interrupt of pytest does not reach it; stop() does
        )
    return ServerProcess(cloud, f"http://127.0.0.1:{port}", process, log)


def wait_ready(server: ServerProcess, path: str = "/v2/health/ready", timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Wait until `path` answers 200; fail with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"mct serve --cloud {server.cloud} exited ({server.process.returncode}):\n{server.log_text()}")
        try:
            if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"mct serve --cloud {server.cloud} did not answer 200 on {path} in {timeout:.0f} s:\n{server.log_text()}"
    )


def register_versions(tracking: TrackingStore, settings: Settings, model: str, count: int) -> None:
    """Train breast_cancer once (quickly) and register it as versions 1..count of `model`; promote 1."""
    options = build_options(n_jobs=1, cv_folds=3, space={"C": [1.0]})
    result = train(load_dataset("breast_cancer"), options)
    for _ in range(count):
        log_training(tracking, result, model)
    promote(tracking, model, "1", settings.promotion)


@dataclass
class PublishedClouds:
    """A model published to the three emulated clouds, and a server per cloud (`poll_seconds` 0.5)."""

    home: Path
    model: str
    settings: Settings
    tracking: TrackingStore
    stores: dict[str, ObjectStore]
    bundles: dict[str, ExportedBundle]
    servers: dict[str, ServerProcess]
    started: list[ServerProcess]

    def start(self, cloud: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        """A server of this model (or of `--model` in `args`) on a free port, not awaited; the fixture stops it."""
        flags = ["--model", self.model, "--poll-seconds", str(POLL_SECONDS), *args]
        server = start_server(cloud, self.home, free_ports(1)[0], env, flags)
        self.started.append(server)
        return server


@pytest.fixture(scope="module")
def serving_clouds(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PublishedClouds]:
    """Versions 1 and 2 registered, 1 promoted and published to aws, gcp and azure, and a server per cloud.

    MLflow lives in the session's data directory; the emulators and the servers' logs under a home of
    this module's own, which the servers get as MCT_HOME (they only read the emulators' state there).
    """
    home = tmp_path_factory.mktemp("serving")
    settings = load_settings(home=home)
    model = f"serving-{uuid.uuid4().hex[:8]}"
    ensure_emulators(home, emulator_buckets(settings))
    published = PublishedClouds(home, model, settings, open_tracking(load_settings()), {}, {}, {}, [])
    try:
        published.stores = cloud_stores(settings)
        register_versions(published.tracking, settings, model, count=2)
        published.bundles = {
            version: export_bundle(published.tracking, model, version, home / "bundles" / version)
            for version in ("1", "2")
        }
        results = publish_bundle(published.bundles["1"], published.stores)
        assert all(result.ok for result in results), [result.error for result in results]
        for cloud in CLOUDS:
            published.servers[cloud] = published.start(cloud)
        for cloud in CLOUDS:
            wait_ready(published.servers[cloud])
        yield published
    finally:
        for server in published.started:
            server.stop()
        stop_emulators(home)
