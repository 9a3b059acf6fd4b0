"""Export a registered version's bundle from MLflow into a local folder, with its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from toolkit.bundle.card import CARD_FILE, CARD_MARKDOWN_FILE, ONNX_FILE, ModelCard
from toolkit.errors import RegistryError
from toolkit.publishing.manifest import MANIFEST_FILE, FileEntry, Manifest
from toolkit.storage.base import file_sha256
from toolkit.tracking.promotion import alias_history
from toolkit.tracking.registry import download_run_artifact, get_version
from toolkit.tracking.runs import BUNDLE_DIR
from toolkit.tracking.store import TrackingStore

__all__ = ["BUNDLE_FILES", "ExportedBundle", "export_bundle"]

BUNDLE_FILES = (ONNX_FILE, CARD_FILE, CARD_MARKDOWN_FILE)


@dataclass(frozen=True)
class ExportedBundle:
    """A bundle on local disk, ready to publish."""

    directory: Path
    manifest: Manifest
    generation: int | None = None  # the alias's move count when exported by alias (see `Pointer`)

    def files(self) -> list[Path]:
        """The bundle's files, then the manifest (which is published after them)."""
        return [self.directory / entry.path for entry in self.manifest.files] + [self.directory / MANIFEST_FILE]


def export_bundle(store: TrackingStore, name: str, ref: str, destination: Path) -> ExportedBundle:
    """Download the bundle of `name` at `ref` (a version, `latest` or `@alias`) and write its manifest."""
    generation = len(alias_history(store, name, ref[1:])) if ref.startswith("@") else None
    version = get_version(store, name, ref)
    if not version.run_id:
        raise RegistryError(f"version {version.version} of {name!r} has no training run to export")
    bundle = destination
    bundle.mkdir(parents=True, exist_ok=True)
    for file_name in BUNDLE_FILES:
        download_run_artifact(store, version.run_id, f"{BUNDLE_DIR}/{file_name}", bundle)
    card = ModelCard.model_validate_json((bundle / CARD_FILE).read_text())
    registered = datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, UTC)
    manifest = Manifest(
        model=name,
        version=str(version.version),
        run_id=version.run_id,
        registered_at=registered.isoformat(timespec="seconds"),
        task=card.task,
        classes=card.classes,
        positive_class=card.positive_class,
        features=[feature.name for feature in card.features],
        threshold=card.threshold,
        files=[
            FileEntry(path=file_name, sha256=file_sha256(bundle / file_name), size=(bundle / file_name).stat().st_size)
            for file_name in BUNDLE_FILES
        ],
    )
    (bundle / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    return ExportedBundle(bundle, manifest, generation)
