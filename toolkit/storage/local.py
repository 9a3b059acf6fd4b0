"""A directory on local disk as an object store (`file://` URLs and plain paths).

Atomicity: every write fills a temporary file in the object's directory, fsyncs it and renames it over
the object (`os.replace`), so readers see the old content or the new, never a part. The SHA-256 travels
with the new inode as the extended attribute `user.mct_sha256` (set before the rename); on filesystems
without user xattrs it is simply absent. Preconditions: `put_if` holds an exclusive `flock` on a sidecar
lock file beside the object while it compares the etag and replaces the file. Nothing is retried: local
errors are not transient. Keys are resolved and must stay inside the root, symlinks included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from toolkit.storage import retry
from toolkit.storage.base import (
    CHUNK_BYTES,
    METADATA_SHA256,
    TEMP_SUFFIX,
    ObjectInfo,
    ObjectStore,
    StoreLocation,
    file_sha256,
    open_source,
    write_atomically,
)
from toolkit.storage.errors import (
    AccessDenied,
    BucketNotFound,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)

if TYPE_CHECKING:
    from toolkit.storage.registry import StoreOptions

__all__ = ["LocalStore"]

T = TypeVar("T")

_XATTR_SHA256 = f"user.{METADATA_SHA256}"
# Sidecar lock files of `put_if`; kept after use (removing one would race with a waiting locker).
_LOCK_SUFFIX = ".mct-lock"


class LocalStore(ObjectStore):
    """Objects are files under `root`; keys are their paths relative to it."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._location = StoreLocation("file", self._root.as_posix())
        self.url = self._location.url

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> LocalStore:
        """The store for a directory (`bucket` is its path); `options` do not apply to local disk."""
        return cls(Path(bucket) / prefix if prefix else Path(bucket))

    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        path = self._path(key)
        return self._replace(key, path, source, sha256 or file_sha256(source))

    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        path = self._path(key)
        self._require_root(key)
        with self._locked(key, path):
            try:
                current: str | None = self.head(key).etag
            except ObjectNotFound:
                current = None
            if current != match:
                raise PreconditionFailed(
                    f"{self._location.object_url(key)}: "
                    + ("already exists" if match is None else "changed since it was read")
                )
            return self._replace(key, path, data, file_sha256(data))

    def get(self, key: str) -> bytes:
        path = self._path(key)
        return self._run(path.read_bytes, key)

    def download(self, key: str, destination: Path) -> ObjectInfo:
        path = self._path(key)
        with self._run(lambda: path.open("rb"), key) as source:
            info = _described(key, source.fileno())
            write_atomically(destination, lambda stream: shutil.copyfileobj(source, stream, CHUNK_BYTES))
        return info

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._run(lambda: path.open("rb"), key) as stream:
            return _described(key, stream.fileno())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._location.name_prefix(prefix)
        self._require_root(None)
        return self._walk(self._root / prefix.rpartition("/")[0], prefix)

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._require_root(key)
        with contextlib.suppress(ObjectNotFound):
            self._run(path.unlink, key)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def _path(self, key: str) -> Path:
        """The file of `key`: validated, not one of our own temporary or lock files, inside the root."""
        path = self._root / self._location.name(key)
        if _is_internal(path.name):
            raise InvalidKey(f"invalid object key {key!r}: names ending in {TEMP_SUFFIX} or {_LOCK_SUFFIX} are ours")
        if not path.resolve().is_relative_to(self._root):
            raise InvalidKey(f"invalid object key {key!r}: it resolves outside {self.url} (through a symlink)")
        return path

    def _replace(self, key: str, path: Path, source: bytes | Path, sha256: str) -> ObjectInfo:
        """Write `source` to `path` atomically, with its SHA-256, and describe the file written."""
        self._require_root(key)
        with open_source(source) as (reader, _size):  # a missing source file is the caller's error, not ours

            def fill(stream: BinaryIO) -> ObjectInfo:
                shutil.copyfileobj(reader, stream, CHUNK_BYTES)
                stream.flush()
                _record_sha256(stream.fileno(), sha256)
                return _info(key, os.fstat(stream.fileno()), sha256)

            return self._run(lambda: write_atomically(path, fill), key)

    @contextlib.contextmanager
    def _locked(self, key: str, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on the sidecar lock file of `path` (threads and processes alike)."""
        lock_path = path.with_name(f".{path.name}{_LOCK_SUFFIX}")
        self._run(lambda: lock_path.parent.mkdir(parents=True, exist_ok=True), key)
        descriptor = self._run(lambda: os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644), key)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def _walk(self, start: Path, prefix: str) -> Iterator[ObjectInfo]:
        """Files under `start` whose keys start with `prefix`, skipping our temporary and lock files."""
        if not start.resolve().is_relative_to(self._root):  # a symlinked directory pointing elsewhere
            return
        for directory, _subdirectories, names in os.walk(start):
            for name in names:
                path = Path(directory, name)
                key = path.relative_to(self._root).as_posix()
                if _is_internal(name) or not key.startswith(prefix):
                    continue
                try:
                    status = path.stat()
                except FileNotFoundError:  # deleted while listing
                    continue
                if stat.S_ISREG(status.st_mode):
                    yield _info(key, status, _read_sha256(path, status))

    def _require_root(self, key: str | None) -> None:
        """Raise `BucketNotFound` unless the root directory exists: writes never create it."""
        if not self._root.is_dir():
            raise self._missing_root(key)

    def _missing_root(self, key: str | None) -> BucketNotFound:
        return BucketNotFound(
            f"{self._location.object_url(key)}: the directory {self._root} does not exist; create it or check the path"
        )

    def _run(self, operation: Callable[[], T], key: str | None) -> T:
        """Run a filesystem operation on `key` with its errors translated."""
        return retry.call(operation, lambda exc: self._translate(exc, key))

    def _translate(self, exc: Exception, key: str | None) -> StorageError | None:
        """The one place where filesystem errors on `key` (None: the store itself) become storage errors."""
        if not isinstance(exc, OSError):
            return None
        url = self._location.object_url(key)
        if not self._root.is_dir():
            return self._missing_root(key)
        if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
            return ObjectNotFound(f"{url}: no such object")
        if isinstance(exc, PermissionError):
            return AccessDenied(f"{url}: permission denied; check the owner and mode of {self._root}")
        return StorageError(f"{url}: {exc.strerror or type(exc).__name__}")


def _info(key: str, status: os.stat_result, sha256: str | None) -> ObjectInfo:
    # A new inode per write plus its mtime and size, and the content hash when known: inode numbers are
    # reused and mtime ticks are coarse, so without the hash two quick writes could share a token.
    etag = f"{status.st_ino:x}-{status.st_mtime_ns:x}-{status.st_size:x}" + (f"-{sha256[:16]}" if sha256 else "")
    return ObjectInfo(key=key, size=status.st_size, etag=etag, sha256=sha256)


def _described(key: str, descriptor: int) -> ObjectInfo:
    status = os.fstat(descriptor)
    return _info(key, status, _read_sha256(descriptor, status))


def _record_sha256(descriptor: int, sha256: str) -> None:
    """Keep the hash with the modification time and size it describes (the stamp rclone trusts too)."""
    status = os.fstat(descriptor)
    with contextlib.suppress(OSError):  # no user xattrs here (some tmpfs, NFS): the hash stays unknown
        os.setxattr(descriptor, _XATTR_SHA256, f"{sha256}:{status.st_mtime_ns}:{status.st_size}".encode())


def _read_sha256(file: int | Path, status: os.stat_result) -> str | None:
    """The recorded hash, unless the file was modified in place since (then it is unknown)."""
    try:
        sha256, mtime_ns, size = os.getxattr(file, _XATTR_SHA256).decode().split(":")
    except (OSError, ValueError):
        return None
    return sha256 if (int(mtime_ns), int(size)) == (status.st_mtime_ns, status.st_size) else None


def _is_internal(name: str) -> bool:
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, _LOCK_SUFFIX))
