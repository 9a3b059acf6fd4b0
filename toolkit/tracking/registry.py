"""Read the model registry: models, versions, aliases, and the artifacts behind a version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from toolkit.bundle.card import CARD_FILE, ModelCard
from toolkit.errors import ModelNotFound, RegistryError
from toolkit.tracking.runs import BUNDLE_DIR
from toolkit.tracking.store import TrackingStore

__all__ = [
    "KEY_METRICS",
    "ModelSummary",
    "VersionSummary",
    "download_run_artifact",
    "get_version",
    "list_models",
    "list_versions",
    "read_card",
    "register_copy",
]

# The metrics `mct models` shows; the rest are in the run and the model card.
KEY_METRICS = ("roc_auc", "accuracy", "f1", "f1_macro", "threshold")


@dataclass(frozen=True)
class VersionSummary:
    """One registered version, with the figures that matter when choosing between versions."""

    version: str
    run_id: str
    created_at_ms: int
    aliases: list[str]
    dataset: str
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    """One registered model: how many versions, the newest, and where its aliases point."""

    name: str
    versions: int
    latest: str | None
    aliases: dict[str, str]
    description: str | None


def list_models(store: TrackingStore) -> list[ModelSummary]:
    """Every registered model, sorted by name."""
    summaries = []
    for model in store.client.search_registered_models(max_results=1000):
        versions = store.client.search_model_versions(f"name = '{_quoted(model.name)}'")
        latest = max((int(version.version) for version in versions), default=None)
        summaries.append(
            ModelSummary(
                name=model.name,
                versions=len(versions),
                latest=str(latest) if latest is not None else None,
                aliases={alias: str(version) for alias, version in (model.aliases or {}).items()},
                description=model.description or None,
            )
        )
    return sorted(summaries, key=lambda summary: summary.name)


def list_versions(store: TrackingStore, name: str) -> list[VersionSummary]:
    """Every version of `name`, newest first, with key metrics from its training run."""
    model = _require_model(store, name)
    # search_model_versions leaves aliases empty; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    summaries = []
    for version in store.client.search_model_versions(f"name = '{_quoted(name)}'"):
        run = store.client.get_run(version.run_id) if version.run_id else None
        metrics = run.data.metrics if run else {}
        summaries.append(
            VersionSummary(
                version=str(version.version),
                run_id=version.run_id or "",
                created_at_ms=int(version.creation_timestamp or 0),
                aliases=sorted(aliases.get(str(version.version), [])),
                dataset=run.data.tags.get("mct.dataset", "") if run else "",
                metrics={key: metrics[key] for key in KEY_METRICS if key in metrics},
                tags=dict(version.tags or {}),
            )
        )
    return sorted(summaries, key=lambda summary: int(summary.version), reverse=True)


def get_version(store: TrackingStore, name: str, version: str) -> ModelVersion:
    """A version by number, `latest`, or `@alias`; `ModelNotFound` names what is missing."""
    _require_model(store, name)
    try:
        if version.startswith("@"):
            return store.client.get_model_version_by_alias(name, version[1:])
        if version == "latest":
            versions = store.client.search_model_versions(f"name = '{_quoted(name)}'")
            if not versions:
                raise ModelNotFound(f"model {name!r} has no versions yet")
            return max(versions, key=lambda candidate: int(candidate.version))
        if not version.isdigit():
            raise ModelNotFound(f"version {version!r} of {name!r} is not a number, 'latest' or '@alias'")
        return store.client.get_model_version(name, version)
    except MlflowException:
        raise ModelNotFound(f"model {name!r} has no version {version}; see `mct models show {name}`") from None


def register_copy(store: TrackingStore, name: str, version: str, description: str) -> str:
    """Register the model of `version` again, as a new version of `name` (same run, same artifacts)."""
    source = get_version(store, name, version)
    if source.source is None:
        raise RegistryError(f"version {version} of {name!r} has no source to register again")
    try:
        copy = store.client.create_model_version(
            name,
            source=source.source,
            run_id=source.run_id,
            model_id=getattr(source, "model_id", None),
            description=description,
        )
    except MlflowException as exc:
        raise RegistryError(f"cannot register a copy of version {version} of {name!r}: {exc.message}") from None
    return str(copy.version)


def download_run_artifact(store: TrackingStore, run_id: str, path: str, destination: Path) -> Path:
    """Download one artifact file or directory of a run into `destination`."""
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(destination))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot fetch {path} of run {run_id}: {exc}") from None
    return Path(local)


def read_card(store: TrackingStore, run_id: str, destination: Path) -> ModelCard:
    """The model card logged by a training run."""
    path = download_run_artifact(store, run_id, f"{BUNDLE_DIR}/{CARD_FILE}", destination)
    return ModelCard.model_validate_json(path.read_text())


def _require_model(store: TrackingStore, name: str) -> RegisteredModel:
    try:
        return store.client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"no registered model named {name!r}; see `mct models list`") from None


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
