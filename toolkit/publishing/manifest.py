"""The manifest of a published model version, and the pointer that names the live version.

Layout on every cloud, under the cloud's URL:

    models/NAME/versions/VERSION/model.onnx         the bundle's files, immutable once verified
    models/NAME/versions/VERSION/model_card.json
    models/NAME/versions/VERSION/model_card.md
    models/NAME/versions/VERSION/manifest.json      each file's SHA-256 and size; written after the files
    models/NAME/ALIAS.json                          the pointer, written last with a precondition
"""

from __future__ import annotations

from pydantic import BaseModel

from toolkit.bundle.card import ThresholdSpec

__all__ = ["MANIFEST_FILE", "FileEntry", "Manifest", "Pointer", "pointer_key", "version_prefix"]

MANIFEST_FILE = "manifest.json"


class FileEntry(BaseModel):
    """One file of the bundle."""

    path: str
    sha256: str
    size: int


class Manifest(BaseModel):
    """What a version consists of; identical bytes on every cloud for the same version."""

    schema_version: int = 1
    model: str
    version: str
    run_id: str
    registered_at: str
    task: str
    classes: list[str | int]
    positive_class: str | int | None
    features: list[str]
    threshold: ThresholdSpec | None
    files: list[FileEntry]

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same manifest always serialises to the same bytes."""
        return (self.model_dump_json(indent=2) + "\n").encode()


class Pointer(BaseModel):
    """The small object that says which version an alias serves.

    `generation` counts the alias's recorded moves in the registry (promotions and rollbacks) when it was
    published: a rollback is a newer generation with an older version. None when published by version.
    """

    model: str
    alias: str
    version: str
    manifest: str
    manifest_sha256: str
    published_at: str
    generation: int | None = None

    def supersedes(self, other: Pointer) -> bool:
        """Whether this pointer may replace `other`: a later alias move, else (unknown moves) a newer version."""
        if self.generation is not None and other.generation is not None and self.generation != other.generation:
            return self.generation > other.generation
        return int(self.version) > int(other.version)

    def to_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


def version_prefix(model: str, version: str) -> str:
    """Key prefix of one version's objects."""
    return f"models/{model}/versions/{version}/"


def pointer_key(model: str, alias: str) -> str:
    """Key of an alias's pointer."""
    return f"models/{model}/{alias}.json"
