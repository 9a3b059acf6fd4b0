"""Make a destination store hold what a source store holds, moving only what changed (rclone-like).

Unchanged objects are recognised by content: the SHA-256 the toolkit stores as metadata (or
computes for local files), else the provider's MD5, else (without `checksum`) equal sizes.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.storage.base import ObjectInfo, ObjectStore, file_digests
from toolkit.storage.errors import StorageError

__all__ = ["SyncSummary", "sync"]

# Parallel transfers by default: enough to hide per-request latency without flooding a service.
DEFAULT_TRANSFERS = 8

ProgressCallback = Callable[[int, int, int], None]
"""Called with (objects done, objects in total, bytes copied so far)."""


@dataclass
class SyncSummary:
    """What a sync did (or, with `dry_run`, would do)."""

    source: str
    destination: str
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_copied: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed


def sync(
    source: ObjectStore,
    destination: ObjectStore,
    *,
    delete: bool = False,
    dry_run: bool = False,
    transfers: int = DEFAULT_TRANSFERS,
    checksum: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SyncSummary:
    """Copy new and changed objects from `source` to `destination`; with `delete`, remove extras."""
    started = time.perf_counter()
    summary = SyncSummary(source.url, destination.url, dry_run=dry_run)
    wanted = {info.key: info for info in source.list()}
    present = {info.key: info for info in destination.list()}
    extras = sorted(set(present) - set(wanted)) if delete else []
    total = len(wanted) + len(extras)
    done = 0
    lock = threading.Lock()

    def record(outcome: list[str] | None, key: str, size: int = 0, error: str | None = None) -> None:
        nonlocal done
        with lock:
            if error is not None:
                summary.failed[key] = error
            elif outcome is not None:
                outcome.append(key)
            summary.bytes_copied += size
            done += 1
            if on_progress is not None:
                on_progress(done, total, summary.bytes_copied)

    def transfer(key: str) -> None:
        try:
            copied = _sync_object(source, destination, wanted[key], present.get(key), checksum, dry_run)
        except StorageError as exc:
            record(None, key, error=str(exc))
        else:
            if copied:
                record(summary.copied, key, wanted[key].size)
            else:
                record(summary.skipped, key)

    def remove(key: str) -> None:
        try:
            if not dry_run:
                destination.delete(key)
        except StorageError as exc:
            record(None, key, error=str(exc))
        else:
            record(summary.deleted, key)

    with ThreadPoolExecutor(max_workers=max(1, transfers)) as pool:
        list(pool.map(transfer, sorted(wanted)))
        list(pool.map(remove, extras))
    for keys in (summary.copied, summary.skipped, summary.deleted):
        keys.sort()
    summary.seconds = time.perf_counter() - started
    return summary


def _sync_object(
    source: ObjectStore,
    destination: ObjectStore,
    info: ObjectInfo,
    existing: ObjectInfo | None,
    checksum: bool,
    dry_run: bool,
) -> bool:
    """Copy one object unless the destination already has the same content; True if copied."""
    digests = _Digests(source, info)
    if existing is not None and existing.size == info.size and _same_content(digests, destination, existing, checksum):
        return False
    if dry_run:
        return True
    path = source.local_path(info.key)
    if path is not None:
        destination.put(info.key, path, sha256=digests.sha256())
        return True
    with tempfile.TemporaryDirectory(prefix="mct-sync-") as scratch:
        staged = Path(scratch) / "object"
        source.download(info.key, staged)
        destination.put(info.key, staged, sha256=info.sha256)
    return True


def _same_content(digests: _Digests, destination: ObjectStore, existing: ObjectInfo, checksum: bool) -> bool:
    """Compare by the cheapest evidence first: hashes in the listings, then MD5, then HEAD requests."""
    if existing.sha256 and (source_sha := digests.sha256(remote=False)):
        return source_sha == existing.sha256
    if existing.md5 and (source_md5 := digests.md5()):
        return source_md5 == existing.md5
    source_sha = digests.sha256()
    target_sha = existing.sha256 or destination.head(existing.key).sha256
    if source_sha and target_sha:
        return source_sha == target_sha
    return not checksum


class _Digests:
    """The source object's hashes, each worked out at most once and only when needed.

    From the listing when it has them, else from the local file, else (SHA-256 only, if `remote`)
    from the object's metadata with a HEAD request.
    """

    def __init__(self, store: ObjectStore, info: ObjectInfo) -> None:
        self._store, self._info = store, info
        self._path = store.local_path(info.key)
        self._computed: dict[str, str] = {}

    def sha256(self, remote: bool = True) -> str | None:
        if self._info.sha256:
            return self._info.sha256
        if self._path is not None:
            return self._from_file("sha256")
        return self._store.head(self._info.key).sha256 if remote else None

    def md5(self) -> str | None:
        if self._info.md5:
            return self._info.md5
        return self._from_file("md5") if self._path is not None else None

    def _from_file(self, algorithm: str) -> str:
        if algorithm not in self._computed and self._path is not None:
            self._computed[algorithm] = file_digests(self._path, algorithm)[algorithm]
        return self._computed[algorithm]
