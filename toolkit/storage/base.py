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
import io
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from toolkit.storage.errors import (
    AccessDenied,
    BucketNotFound,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "CHUNK_BYTES",
    "METADATA_SHA256",
    "TEMP_SUFFIX",
    "TRANSFER_THREADS",
    "ObjectInfo",
    "ObjectStore",
    "StoreLocation",
    "file_digests",
    "file_sha256",
    "http_error",
    "missing_bucket",
    "open_source",
    "paginate",
    "unreachable",
    "validate_key",
    "validate_prefix",
    "write_atomically",
]

T = TypeVar("T")

METADATA_SHA256 = "mct_sha256"
# Read and hash in chunks this size: large enough for throughput, small enough for memory.
CHUNK_BYTES = 8 * 1024 * 1024
# Objects above CHUNK_BYTES go in parts of CHUNK_BYTES (S3 multipart, GCS resumable, Azure blocks), this
# many at once: enough to hide per-request latency; sync already moves several objects in parallel.
TRANSFER_THREADS = 4
# Temporary files of atomic writes end with this, so that listings of local directories can skip them.
TEMP_SUFFIX = ".mct-tmp"


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

    def local_path(self, key: str) -> Path | None:
        """The object's file on local disk, for stores that have one (read it, never write it)."""
        return None

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
    # Split by hand: PurePosixPath would drop "." and empty segments, which a cloud keeps as distinct names
    # ("a/./b", "a//b") while a local file system maps them onto "a/b".
    if any(part in {"", ".", ".."} for part in key.split("/")):
        raise InvalidKey(
            f"invalid object key {key!r}: empty, '.' and '..' segments (and a trailing '/') are not allowed"
        )
    return key


def file_sha256(source: bytes | Path) -> str:
    """SHA-256 hex digest of bytes or of a file, read in chunks."""
    return file_digests(source, "sha256")["sha256"]


# Helpers shared by the backends: key mapping, sources, atomic local writes, paging.


@dataclass(frozen=True)
class StoreLocation:
    """A bucket (container, directory) and a key prefix: maps keys to provider object names and URLs."""

    scheme: str
    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        """The store's URL, e.g. `s3://bucket/prefix`."""
        base = f"{self.scheme}://{self.bucket}"
        return f"{base}/{self.prefix}" if self.prefix else base

    def object_url(self, key: str | None) -> str:
        """The URL of one object, for messages; the store's URL for bucket-level requests (`key` None)."""
        return f"{self.url}/{key}" if key is not None else self.url

    def name(self, key: str) -> str:
        """The provider's object name for `key`, which is validated first."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def name_prefix(self, prefix: str) -> str:
        """The provider's name prefix that lists the keys starting with `prefix` (validated first)."""
        validate_prefix(prefix)
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def key(self, name: str) -> str:
        """The key of a provider object name listed under this location's prefix."""
        return name[len(self.prefix) + 1 :] if self.prefix else name


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix: empty, or a valid key optionally followed by one `/`."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def file_digests(source: bytes | Path, *algorithms: str) -> dict[str, str]:
    """Hex digests of bytes or of a file for each named hashlib algorithm, in one pass."""
    # MD5 serves as a transfer checksum here, not for security: allowed on FIPS-mode Pythons too.
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with open_source(source) as (stream, _size):
        while chunk := stream.read(CHUNK_BYTES):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


@contextmanager
def open_source(source: bytes | Path) -> Iterator[tuple[BinaryIO, int]]:
    """A readable binary stream over bytes or a file, with its size in bytes."""
    if isinstance(source, bytes):
        yield io.BytesIO(source), len(source)
    else:
        with source.open("rb") as stream:
            yield stream, os.fstat(stream.fileno()).st_size


def write_atomically(destination: Path, write: Callable[[BinaryIO], T]) -> T:
    """Let `write` fill a temporary file beside `destination`, then fsync it and rename it into place.

    Readers see the old file or the new one, never a part; on any failure the temporary file is removed.
    Missing parent directories are created. Returns what `write` returns.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o644)  # mkstemp's 0600 would hide the object from other readers
            result = write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(destination.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return result


def paginate(fetch_page: Callable[[str | None], tuple[Iterable[T], str | None]]) -> Iterator[T]:
    """Every item of every page; `fetch_page(token)` returns one page and the next token (falsy after the last)."""
    token: str | None = None
    while True:
        items, token = fetch_page(token)
        yield from items
        if not token:
            return


# Error messages shared by the cloud backends' translations: the URL first, then what to check.


def http_error(
    url: str,
    status: int,
    code: str,
    *,
    endpoint: str,
    bucket_missing: bool,
    credentials_hint: str,
    transient: bool = False,
) -> StorageError:
    """The storage error for an HTTP error answer from `endpoint` about `url`.

    `bucket_missing`: a 404 means the bucket (the provider's code said so, or the request was about the
    bucket). `transient`: the provider's code marks a retryable answer that its status does not.
    """
    detail = f"{status} {code}".strip()
    if status == 404:
        return missing_bucket(url, endpoint) if bucket_missing else ObjectNotFound(f"{url}: no such object")
    if status in (401, 403):
        return AccessDenied(f"{url}: access denied ({detail}); check {credentials_hint}")
    if status in (409, 412):
        return PreconditionFailed(f"{url}: the object changed, or already exists, since it was read ({detail})")
    if transient or status in (408, 429) or status >= 500:
        return StorageUnavailable(f"{url}: {endpoint} answered {detail}; it is failing or throttling, retry later")
    return StorageError(f"{url}: {endpoint} refused the request ({detail})")


def missing_bucket(url: str, endpoint: str) -> BucketNotFound:
    """The error for a bucket or container that does not exist."""
    return BucketNotFound(
        f"{url}: the bucket (container) does not exist at {endpoint}; create it, or check its name and the endpoint"
    )


def unreachable(url: str, endpoint: str, exc: Exception) -> StorageUnavailable:
    """The error for a request that got no answer: refused or reset connection, timeout, cut-off body."""
    return StorageUnavailable(
        f"{url}: no answer from {endpoint} ({type(exc).__name__}); "
        "check that the service (or its emulator) is running and reachable"
    )
