"""Google Cloud Storage (and fake-gcs-server) through google-cloud-storage.

Atomicity: `put` sends objects up to 8 MiB as one multipart request and larger ones as a resumable
upload in `CHUNK_BYTES` chunks; GCS creates the object only when the upload is finalized.
Preconditions: `put_if` uploads with `ifGenerationMatch` (0: create only; else the generation read),
and GCS answers 412. The etag is the object's generation, as a string.
Retries: every call passes `retry=None` and `(connect, read)` timeouts, so the library's own retry
(a 120 s deadline by default) never runs; `toolkit.storage.retry` decides.
Endpoints: `StoreOptions.endpoint` means an emulator (anonymous credentials, project "mct-local"); else
the library honours `STORAGE_EMULATOR_HOST`; else Application Default Credentials.
A 404 does not always say whether the object or the bucket is missing (fake-gcs-server says neither),
so a 404 on an object is followed by a check of the bucket.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import requests
from google.api_core.exceptions import GoogleAPICallError
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption

from toolkit.storage import retry
from toolkit.storage.base import (
    CHUNK_BYTES,
    METADATA_SHA256,
    ObjectInfo,
    ObjectStore,
    StoreLocation,
    file_sha256,
    http_error,
    missing_bucket,
    open_source,
    paginate,
    unreachable,
    write_atomically,
)
from toolkit.storage.errors import AccessDenied, ObjectNotFound, PreconditionFailed, StorageError

if TYPE_CHECKING:
    from toolkit.storage.registry import StoreOptions

__all__ = ["GcsStore"]

T = TypeVar("T")

EMULATOR_PROJECT = "mct-local"
_TIMEOUT = (retry.CONNECT_TIMEOUT_SECONDS, retry.READ_TIMEOUT_SECONDS)
_CREDENTIALS_HINT = "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
# Refused, reset or cut-off connections, timeouts, and a download whose checksum did not match.
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    TransportError,
    DataCorruption,
)


class GcsStore(ObjectStore):
    """Objects under a prefix of one GCS bucket; one client per store."""

    def __init__(self, location: StoreLocation, client: storage.Client) -> None:
        self._location = location
        self._bucket = client.bucket(location.bucket)
        parsed = urlsplit(client.api_endpoint)
        self._endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.url = location.url

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> GcsStore:
        """An emulator at `options.endpoint`, else `STORAGE_EMULATOR_HOST`, else default credentials."""
        location = StoreLocation("gs", bucket, prefix)
        try:
            if options.endpoint:
                client = storage.Client(
                    project=EMULATOR_PROJECT,
                    credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": options.endpoint},
                )
            else:
                client = storage.Client()
        except DefaultCredentialsError:
            raise AccessDenied(f"{location.url}: no Google credentials found; {_CREDENTIALS_HINT}") from None
        return cls(location, client)

    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        return self._upload(key, source, sha256 or file_sha256(source), None)

    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        if match is not None and not match.isdigit():
            raise PreconditionFailed(f"{self._location.object_url(key)}: {match!r} is not a GCS generation")
        return self._upload(key, data, file_sha256(data), int(match or 0))  # generation 0: only if absent

    def get(self, key: str) -> bytes:
        name = self._location.name(key)
        return self._call(lambda: self._bucket.blob(name).download_as_bytes(retry=None, timeout=_TIMEOUT), key)

    def download(self, key: str, destination: Path) -> ObjectInfo:
        name = self._location.name(key)

        def fetch() -> ObjectInfo:
            blob = self._bucket.blob(name)
            blob.reload(retry=None, timeout=_TIMEOUT)
            # The blob now knows its generation, and downloads exactly that one, so the content matches
            # the metadata returned; an overwrite in between makes that generation vanish (404).
            write_atomically(destination, lambda stream: blob.download_to_file(stream, retry=None, timeout=_TIMEOUT))
            return self._info(key, blob)

        return self._call(fetch, key)

    def head(self, key: str) -> ObjectInfo:
        name = self._location.name(key)

        def reload() -> ObjectInfo:
            blob = self._bucket.blob(name)
            blob.reload(retry=None, timeout=_TIMEOUT)
            return self._info(key, blob)

        return self._call(reload, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        name_prefix = self._location.name_prefix(prefix)

        def page(token: str | None) -> tuple[list[ObjectInfo], str | None]:
            def fetch() -> tuple[list[ObjectInfo], str | None]:
                blobs = self._bucket.client.list_blobs(
                    self._bucket, prefix=name_prefix, page_token=token, retry=None, timeout=_TIMEOUT
                )
                first: Iterable[storage.Blob] = next(blobs.pages, [])
                infos = [self._info(self._location.key(b.name), b) for b in first if not b.name.endswith("/")]
                return infos, blobs.next_page_token

            return self._call(fetch, None)

        return paginate(page)

    def delete(self, key: str) -> None:
        name = self._location.name(key)
        with contextlib.suppress(ObjectNotFound):
            self._call(lambda: self._bucket.blob(name).delete(retry=None, timeout=_TIMEOUT), key)

    def _upload(self, key: str, source: bytes | Path, sha256: str, generation: int | None) -> ObjectInfo:
        """Upload with the SHA-256 as metadata, if the live generation is `generation` (None: always)."""
        name = self._location.name(key)

        def upload() -> ObjectInfo:
            blob = self._bucket.blob(name, chunk_size=CHUNK_BYTES)
            blob.metadata = {METADATA_SHA256: sha256}
            with open_source(source) as (stream, size):
                blob.upload_from_file(stream, size=size, if_generation_match=generation, retry=None, timeout=_TIMEOUT)
            return self._info(key, blob)

        return self._call(upload, key)

    def _info(self, key: str, blob: storage.Blob) -> ObjectInfo:
        md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
        sha256 = (blob.metadata or {}).get(METADATA_SHA256)
        return ObjectInfo(key=key, size=blob.size or 0, etag=str(blob.generation), sha256=sha256, md5=md5)

    def _call(self, operation: Callable[[], T], key: str | None) -> T:
        """Run one request about `key` (None: about the bucket) with retries and translated errors."""
        try:
            return retry.call(operation, lambda exc: self._translate(exc, key))
        except ObjectNotFound as missing:
            if not self._call(lambda: self._bucket.exists(retry=None, timeout=_TIMEOUT), None):
                raise missing_bucket(self._location.object_url(key), self._endpoint) from missing
            raise

    def _translate(self, exc: Exception, key: str | None) -> StorageError | None:
        """The one place where google-cloud-storage's exceptions become storage errors."""
        url = self._location.object_url(key)
        if isinstance(exc, GoogleAPICallError):
            return http_error(
                url,
                exc.code or 0,
                type(exc).__name__,
                endpoint=self._endpoint,
                bucket_missing=key is None,  # for objects, `_call` asks whether the bucket exists
                credentials_hint=f"the credentials ({_CREDENTIALS_HINT}) and the bucket's IAM roles",
            )
        if isinstance(exc, DefaultCredentialsError | RefreshError):
            return AccessDenied(
                f"{url}: the Google credentials cannot be used ({type(exc).__name__}); {_CREDENTIALS_HINT}"
            )
        if isinstance(exc, _TRANSIENT_ERRORS):
            return unreachable(url, self._endpoint, exc)
        return None
