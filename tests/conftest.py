"""Shared fixtures: a real MLflow store on SQLite in a temporary data directory, and the CLI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.config import Settings, load_settings
from toolkit.tracking.store import TrackingStore, open_store

pytest_plugins = ["tests.emulator_fixtures"]


@pytest.fixture(scope="session")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory (SQLite store and artifacts) per test worker."""
    home = tmp_path_factory.mktemp("mct-home")
    saved = {name: os.environ.get(name) for name in ("MCT_HOME", "MLFLOW_TRACKING_URI", "MCT_TRAINING__N_JOBS")}
    os.environ["MCT_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # Test workers already use both cores; nested process pools would only add start-up time.
    os.environ["MCT_TRAINING__N_JOBS"] = "1"
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def settings(data_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> TrackingStore:
    return open_store(settings)


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"model-{uuid.uuid4().hex[:8]}"


class Cli:
    """Runs `mct` in-process and returns Click's result (exit_code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def mct(data_home: Path) -> Cli:
    return Cli()
