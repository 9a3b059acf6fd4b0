"""Where MLflow keeps runs and models: SQLite in the data directory, or `MLFLOW_TRACKING_URI`."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

from toolkit.config import Settings

__all__ = ["TrackingStore", "open_store"]

# MLflow otherwise reports usage to an outside host, which a closed network turns into delays.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow prints run links to stdout with a tracking server, which would corrupt `--json` output;
# the toolkit shows the link itself (`run_url`).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow
from mlflow.tracking import MlflowClient

DATABASE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class TrackingStore:
    """An open connection to the tracking server and model registry."""

    tracking_uri: str
    experiment_id: str
    client: MlflowClient

    def run_url(self, run_id: str) -> str | None:
        """The run's page in a tracking server's UI; None for the embedded store."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"


def open_store(settings: Settings) -> TrackingStore:
    """Point MLflow at the configured store, creating the local one and the experiment if needed."""
    _quiet_mlflow()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    artifact_location: str | None = None
    if not uri:
        settings.home.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(settings.home / DATABASE_FILE).as_posix()}"
        artifact_location = (settings.home / ARTIFACTS_DIR).as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(settings.experiment, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return TrackingStore(uri, experiment_id, client)


def _quiet_mlflow() -> None:
    """Keep MLflow's and Alembic's informational chatter out of the toolkit's output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
