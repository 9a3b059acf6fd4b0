"""Publish an exported bundle to several clouds: files, then manifest, verify, then the pointer.

Per cloud, in this order, so that a reader following the pointer never finds a partial version:
1. upload each file of `models/NAME/versions/VERSION/` that is not already there with the right hash
   (version objects are immutable: an existing object with another hash stops the cloud);
2. upload the manifest, then read every object back and recompute its SHA-256;
3. only then move the pointer `models/NAME/ALIAS.json`, with the provider's precondition so that
   two publishers cannot interleave. A pointer that supersedes ours (a later move of the alias, e.g. a
   rollback published after a promotion; else a newer version) is left alone.
A failure on one cloud leaves that cloud's pointer where it was; running again resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.publishing.manifest import MANIFEST_FILE, Manifest, Pointer, pointer_key, version_prefix
from toolkit.publishing.verify import check_version
from toolkit.storage import ObjectStore, file_sha256
from toolkit.storage.errors import ObjectNotFound, PreconditionFailed, StorageError

if TYPE_CHECKING:
    from toolkit.publishing.export import ExportedBundle

__all__ = ["CloudPublish", "publish_bundle"]

# A pointer write that loses a race re-reads and tries again this many times before giving up.
POINTER_ATTEMPTS = 5

ProgressCallback = Callable[[str, str], None]
"""Called with (cloud, event) as a cloud's publish advances."""


@dataclass
class CloudPublish:
    """What publishing did on one cloud."""

    cloud: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pointer: str = "unchanged"
    previous_version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def publish_bundle(
    bundle: ExportedBundle,
    stores: dict[str, ObjectStore],
    alias: str = "champion",
    on_progress: ProgressCallback | None = None,
) -> list[CloudPublish]:
    """Publish `bundle` to every store in parallel; one result per cloud, failures included."""
    with ThreadPoolExecutor(max_workers=max(1, len(stores))) as pool:
        futures = [
            pool.submit(_publish_one, cloud, store, bundle, alias, on_progress) for cloud, store in stores.items()
        ]
        return [future.result() for future in futures]


def _publish_one(
    cloud: str, store: ObjectStore, bundle: ExportedBundle, alias: str, on_progress: ProgressCallback | None
) -> CloudPublish:
    result = CloudPublish(cloud)
    manifest = bundle.manifest
    prefix = version_prefix(manifest.model, manifest.version)
    manifest_bytes = manifest.to_bytes()
    try:
        for entry in manifest.files:
            _put_immutable(store, prefix + entry.path, bundle.directory / entry.path, entry.sha256, result)
        _put_immutable(store, prefix + MANIFEST_FILE, bundle.directory / MANIFEST_FILE, None, result)
        problems = check_version(store, manifest, manifest_bytes)
        if problems:
            raise StorageError(f"{store.url}: read-back failed: {'; '.join(problems)}")
        if on_progress:
            on_progress(cloud, "verified")
        _move_pointer(store, manifest, alias, bundle.generation, result)
        if on_progress:
            on_progress(cloud, "pointer")
    except StorageError as exc:
        result.error = str(exc)
    return result


def _put_immutable(store: ObjectStore, key: str, path: Path, sha256: str | None, result: CloudPublish) -> None:
    expected = sha256 or file_sha256(path)
    try:
        existing = store.head(key)
    except ObjectNotFound:
        store.put(key, path, sha256=expected)
        result.uploaded.append(key)
        return
    if existing.sha256 == expected:
        result.skipped.append(key)
        return
    raise StorageError(
        f"{store.url}/{key} already exists with other content (sha256 {existing.sha256}); "
        "published versions are immutable: investigate before deleting it"
    )


def _move_pointer(
    store: ObjectStore, manifest: Manifest, alias: str, generation: int | None, result: CloudPublish
) -> None:
    key = pointer_key(manifest.model, alias)
    pointer = Pointer(
        model=manifest.model,
        alias=alias,
        version=manifest.version,
        manifest=version_prefix(manifest.model, manifest.version) + MANIFEST_FILE,
        manifest_sha256=file_sha256(manifest.to_bytes()),
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
        generation=generation,
    )
    for _ in range(POINTER_ATTEMPTS):
        current, etag = _read_pointer(store, key)
        result.previous_version = current.version if current else None
        if current is not None and current.version == manifest.version:
            result.pointer = "already current"
            return
        if current is not None and not pointer.supersedes(current):
            result.pointer = f"left at v{current.version}, published later"
            return
        try:
            store.put_if(key, pointer.to_bytes(), match=etag)
        except PreconditionFailed:
            continue
        result.pointer = "moved"
        return
    raise StorageError(f"{store.url}/{key} kept changing under concurrent publishers; try again")


def _read_pointer(store: ObjectStore, key: str) -> tuple[Pointer | None, str | None]:
    """The current pointer and the etag it was read at (None, None when there is none)."""
    try:
        info = store.head(key)
        data = store.get(key)
    except ObjectNotFound:
        return None, None
    return Pointer.model_validate_json(data), info.etag
