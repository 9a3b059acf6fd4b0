"""The storage interface, stated once. Backends implement the primitives; everything else
(sync, publish, verify) is written once on top of them.

Contract for every backend:
- Keys are relative to the store's prefix, use `/`, and pass `validate_key`.
- `put` is atomic: no reader can observe a partially written object (single PUT, or a multipart /
  resumable / block upload that becomes visible only when committed).
- `put` records the content's SHA-256 as object metadata (`METADATA_SHA256`), and `head`/`list`
  return it when present, so unchanged objects can be recognised without downloading them.
- `etag` is an opaque token that changes on every write of the key; `put_if` compares against it.
- Transient failures (5xx, throttling, resets, timeouts) are retried with bounded, jittered backoff;
  permanent ones raise at once. Only `toolkit.storage.errors` exceptions escape a backend.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from toolkit.storage.errors import InvalidKey

__all__ = ["CHUNK_BYTES", "METADATA_SHA256", "ObjectInfo", "ObjectStore", "file_sha256", "validate_key"]

METADATA_SHA256 = "mct_sha256"
# Read and hash in chunks this size: large enough for throughput, small enough for memory.
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object without reading its content."""

    key: str
    size: int
    etag: str
    sha256: str | None = None
    md5: str | None = None


class ObjectStore(ABC):
    """A bucket (or container, or directory) and a key prefix inside it."""

    #: The store's URL, e.g. `s3://bucket/prefix`; used in messages, never holds credentials.
    url: str

    @abstractmethod
    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        """Write the whole object from bytes or a file, atomically; `sha256` is computed if not given."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        """Write only if the object is absent (`match=None`) or its etag still equals `match`.

        Raises `PreconditionFailed` otherwise. Used for small pointer objects.
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's content; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def download(self, key: str, destination: Path) -> ObjectInfo:
        """Stream the object into `destination` (written whole or not at all)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's metadata; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no guaranteed order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        from toolkit.storage.errors import ObjectNotFound

        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key; raise `InvalidKey` if it could escape its prefix."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid object key {key!r}: keys are relative, use '/', and are not empty")
    parts = PurePosixPath(key).parts
    if any(part in {"..", "."} for part in parts) or key.endswith("/"):
        raise InvalidKey(f"invalid object key {key!r}: '.' and '..' segments and trailing '/' are not allowed")
    return key


def file_sha256(source: bytes | Path) -> str:
    """SHA-256 hex digest of bytes or of a file, read in chunks."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    else:
        with source.open("rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()
