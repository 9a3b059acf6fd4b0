"""Azure Blob Storage (and Azurite) through azure-storage-blob.

Atomicity: `put` sends blobs up to `CHUNK_BYTES` as one Put Blob; larger ones as blocks of `CHUNK_BYTES`
that become the blob only when the block list is committed. Every put sets Content-MD5 (Azure keeps it
for Put Blob but not for a committed block list unless the client sends it), so `md5` is always known.
Preconditions: `put_if` creates with `If-None-Match: *` (`overwrite=False`, answered 409 when the blob
exists) or swaps with `If-Match: <etag>` (answered 412).
Retries: the SDK's retry policy is off (`retry_total=0`); `toolkit.storage.retry` decides.
Credentials: `StoreOptions.connection_string`, else `AZURE_STORAGE_CONNECTION_STRING`; without one, the
account URL (`StoreOptions.endpoint`, else `AZURE_STORAGE_ACCOUNT_URL`) with azure-identity's
`DefaultAzureCredential` (a managed identity in Azure, `az login` on a workstation). The SDK's default
API version is newer than Azurite 3.35 accepts; the emulator is started with `--skipApiVersionCheck`
rather than pinning an older version here, which real Azure does not need.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.paging import PageIterator
from azure.storage.blob import BlobProperties, ContainerClient, ContentSettings

from toolkit.storage import retry
from toolkit.storage.base import (
    CHUNK_BYTES,
    METADATA_SHA256,
    TRANSFER_THREADS,
    ObjectInfo,
    ObjectStore,
    StoreLocation,
    file_digests,
    http_error,
    open_source,
    paginate,
    unreachable,
    write_atomically,
)
from toolkit.storage.errors import AccessDenied, ObjectNotFound, StorageError

if TYPE_CHECKING:
    from toolkit.storage.registry import StoreOptions

__all__ = ["AzureBlobStore"]

T = TypeVar("T")

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_ENV = "AZURE_STORAGE_ACCOUNT_URL"
_TRANSIENT_ERRORS = (ServiceRequestError, ServiceResponseError, IncompleteReadError)


class AzureBlobStore(ObjectStore):
    """Blobs under a prefix of one container; one ContainerClient (thread-safe) per store."""

    def __init__(self, location: StoreLocation, container: ContainerClient) -> None:
        self._location = location
        self._container = container
        parsed = urlsplit(container.url)  # scheme and host only: a SAS token would be in the query
        self._endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.url = location.url

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> AzureBlobStore:
        """The container `bucket` of the account named by the connection string (options, else environment)."""
        location = StoreLocation("az", bucket, prefix)
        connection_string = options.connection_string or os.environ.get(CONNECTION_STRING_ENV)
        client_options: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": retry.CONNECT_TIMEOUT_SECONDS,
            "read_timeout": retry.READ_TIMEOUT_SECONDS,
            "max_single_put_size": CHUNK_BYTES,
            "max_block_size": CHUNK_BYTES,
        }
        if connection_string:
            try:
                container = ContainerClient.from_connection_string(connection_string, bucket, **client_options)
            except ValueError:  # the SDK's message is generic; never echo the string itself
                raise AccessDenied(
                    f"{location.url}: the Azure connection string is malformed; copy it again from the portal "
                    f"(Access keys) or `az storage account show-connection-string`, and set {CONNECTION_STRING_ENV}"
                ) from None
            return cls(location, container)
        account_url = options.endpoint or os.environ.get(ACCOUNT_URL_ENV)
        if not account_url:
            raise AccessDenied(
                f"{location.url}: no Azure credentials; set {CONNECTION_STRING_ENV} (Storage account > Access keys "
                f"> Connection string), or {ACCOUNT_URL_ENV} (https://ACCOUNT.blob.core.windows.net) to sign in "
                "with a managed identity or `az login`"
            )
        from azure.identity import DefaultAzureCredential

        # The identity's token is fetched on the first request: a missing identity surfaces there as AccessDenied.
        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        container = ContainerClient(account_url, bucket, credential=credential, **client_options)
        return cls(location, container)

    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        return self._upload(key, source, sha256, overwrite=True)

    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        if match is None:
            return self._upload(key, data, None, overwrite=False)
        return self._upload(
            key, data, None, overwrite=True, etag=f'"{match}"', match_condition=MatchConditions.IfNotModified
        )

    def get(self, key: str) -> bytes:
        blob = self._container.get_blob_client(self._location.name(key))
        return self._call(lambda: blob.download_blob().readall(), key)

    def download(self, key: str, destination: Path) -> ObjectInfo:
        blob = self._container.get_blob_client(self._location.name(key))

        def fetch() -> ObjectInfo:
            # The downloader pins later chunks to the first response's ETag, so content and info agree.
            downloader = blob.download_blob(max_concurrency=TRANSFER_THREADS)
            write_atomically(destination, downloader.readinto)
            return _info(key, downloader.properties)

        return self._call(fetch, key)

    def head(self, key: str) -> ObjectInfo:
        blob = self._container.get_blob_client(self._location.name(key))
        return _info(key, self._call(blob.get_blob_properties, key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        name_prefix = self._location.name_prefix(prefix) or None

        def page(token: str | None) -> tuple[list[ObjectInfo], str | None]:
            def fetch() -> tuple[list[ObjectInfo], str | None]:
                listing = self._container.list_blobs(name_starts_with=name_prefix, include=["metadata"])
                pages = cast(PageIterator, listing.by_page(continuation_token=token))
                first: Iterable[BlobProperties] = next(pages, [])
                infos = [_info(self._location.key(b.name), b) for b in first if not b.name.endswith("/")]
                return infos, pages.continuation_token

            return self._call(fetch, None)

        return paginate(page)

    def delete(self, key: str) -> None:
        blob = self._container.get_blob_client(self._location.name(key))
        with contextlib.suppress(ObjectNotFound):
            self._call(blob.delete_blob, key)

    def _upload(self, key: str, source: bytes | Path, sha256: str | None, **conditions: Any) -> ObjectInfo:
        """Upload with the SHA-256 as metadata and Content-MD5 set; `conditions` go to `upload_blob`."""
        blob = self._container.get_blob_client(self._location.name(key))
        digests = file_digests(source, "md5", *([] if sha256 else ["sha256"]))
        metadata = {METADATA_SHA256: sha256 or digests["sha256"]}
        settings = ContentSettings(content_md5=bytearray.fromhex(digests["md5"]))

        def upload() -> ObjectInfo:
            with open_source(source) as (stream, size):
                response = blob.upload_blob(
                    stream,
                    length=size,
                    metadata=metadata,
                    content_settings=settings,
                    max_concurrency=TRANSFER_THREADS,
                    **conditions,
                )
            etag = response["etag"].strip('"')
            return ObjectInfo(key=key, size=size, etag=etag, sha256=metadata[METADATA_SHA256], md5=digests["md5"])

        return self._call(upload, key)

    def _call(self, operation: Callable[[], T], key: str | None) -> T:
        """Run one request about `key` (None: about the container) with retries and translated errors."""
        return retry.call(operation, lambda exc: self._translate(exc, key))

    def _translate(self, exc: Exception, key: str | None) -> StorageError | None:
        """The one place where the Azure SDK's exceptions become storage errors."""
        url = self._location.object_url(key)
        if isinstance(exc, _TRANSIENT_ERRORS):
            return unreachable(url, self._endpoint, exc)
        if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:  # no token: nothing was sent
            reason = str(exc.message or exc).strip().splitlines()[0]
            return AccessDenied(f"{url}: cannot sign in to Azure ({reason}); see `az login` or the app's identity")
        if not isinstance(exc, HttpResponseError):
            return None
        error_code = getattr(exc, "error_code", None)  # set by azure-storage-blob: a StorageErrorCode or str
        code = str(getattr(error_code, "value", error_code) or "")
        status = exc.status_code or 0
        return http_error(
            url,
            status,
            code,
            endpoint=self._endpoint,
            bucket_missing=code == "ContainerNotFound" or key is None,
            credentials_hint=f"the account key or SAS in the connection string ({CONNECTION_STRING_ENV}), "
            "or the role of the signed-in identity (Storage Blob Data Reader or Contributor)",
        )


def _info(key: str, properties: BlobProperties) -> ObjectInfo:
    md5 = properties.content_settings.content_md5
    return ObjectInfo(
        key=key,
        size=properties.size,
        etag=str(properties.etag).strip('"'),
        sha256=(properties.metadata or {}).get(METADATA_SHA256),
        md5=bytes(md5).hex() if md5 else None,
    )
