"""Amazon S3 and S3-compatible services (moto, MinIO, ...) through boto3.

Atomicity: `put` is boto3's managed transfer: one PutObject up to `CHUNK_BYTES`, above it a multipart
upload of `CHUNK_BYTES` parts that S3 makes visible only when CompleteMultipartUpload succeeds.
Preconditions: `put_if` is a PutObject with `If-None-Match: *` (create only) or `If-Match: <etag>`
(compare and swap); S3 answers 412, or 409 when another conditional write of the key is in flight, and
404 for If-Match on a key that is gone. moto 5.2 enforces both headers (its check and write are not under
one lock, so its single winner rests on the GIL's timing; it never sends the 409).
Retries: botocore makes one attempt per request; `toolkit.storage.retry` decides the rest.
Metadata: `head` returns the SHA-256 from `x-amz-meta-mct_sha256`; ListObjectsV2 carries no user metadata,
so `list` leaves `sha256` None. `md5` is the ETag when it is a plain MD5 (single-part uploads without
SSE-KMS); multipart ETags end in `-<parts>` and give none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from toolkit.storage import retry
from toolkit.storage.base import (
    CHUNK_BYTES,
    METADATA_SHA256,
    TRANSFER_THREADS,
    ObjectInfo,
    ObjectStore,
    StoreLocation,
    file_sha256,
    http_error,
    open_source,
    paginate,
    unreachable,
    write_atomically,
)
from toolkit.storage.errors import AccessDenied, ObjectNotFound, PreconditionFailed, StorageError

if TYPE_CHECKING:
    from toolkit.storage.registry import StoreOptions

__all__ = ["S3Store"]

T = TypeVar("T")

DEFAULT_REGION = "us-east-1"
_CLIENT_CONFIG = Config(
    connect_timeout=retry.CONNECT_TIMEOUT_SECONDS,
    read_timeout=retry.READ_TIMEOUT_SECONDS,
    retries={"total_max_attempts": 1, "mode": "standard"},  # one attempt: toolkit.storage.retry retries
)
_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=CHUNK_BYTES, multipart_chunksize=CHUNK_BYTES, max_concurrency=TRANSFER_THREADS
)
# Error codes S3 uses for throttling and for a client that sent too slowly: worth a retry.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout"}
)
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or the store options"
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


class S3Store(ObjectStore):
    """Objects under a prefix of one S3 bucket; one boto3 client (thread-safe) per store."""

    def __init__(self, location: StoreLocation, client: Any) -> None:
        self._location = location
        self._client = client
        self._bucket = location.bucket
        parsed = urlsplit(client.meta.endpoint_url)
        self._endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.url = location.url

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> S3Store:
        """Endpoint from `options` else `AWS_ENDPOINT_URL` (botocore reads it); keys from `options` else the chain."""
        session = boto3.session.Session(
            aws_access_key_id=options.access_key_id, aws_secret_access_key=options.secret_access_key
        )
        client = session.client(
            "s3",
            endpoint_url=options.endpoint,
            region_name=options.region or session.region_name or DEFAULT_REGION,
            config=_CLIENT_CONFIG,
        )
        return cls(StoreLocation("s3", bucket, prefix), client)

    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        name = self._location.name(key)
        sha256 = sha256 or file_sha256(source)
        metadata = {METADATA_SHA256: sha256}

        def upload() -> ObjectInfo | None:
            with open_source(source) as (stream, size):
                if size <= CHUNK_BYTES:
                    # One PutObject: it returns the ETag, and skips the managed transfer's per-call
                    # thread pool, which dominated the cost of syncing many small objects.
                    response = self._client.put_object(Bucket=self._bucket, Key=name, Body=stream, Metadata=metadata)
                    return _info(key, size, response["ETag"], sha256)
                extra = {"Metadata": metadata}
                self._client.upload_fileobj(stream, self._bucket, name, ExtraArgs=extra, Config=_TRANSFER_CONFIG)
                return None

        uploaded = self._call(upload, key)
        return uploaded or self.head(key)  # a multipart transfer does not return the final ETag

    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        name = self._location.name(key)
        sha256 = file_sha256(data)
        condition = {"IfNoneMatch": "*"} if match is None else {"IfMatch": f'"{match}"'}
        try:
            response = self._call(
                lambda: self._client.put_object(
                    Bucket=self._bucket, Key=name, Body=data, Metadata={METADATA_SHA256: sha256}, **condition
                ),
                key,
            )
        except ObjectNotFound:
            # If-Match on a key that no longer exists: for a compare-and-swap, the object changed.
            raise PreconditionFailed(f"{self._location.object_url(key)}: deleted since it was read") from None
        return _info(key, len(data), response["ETag"], sha256)

    def get(self, key: str) -> bytes:
        name = self._location.name(key)
        return self._call(lambda: self._client.get_object(Bucket=self._bucket, Key=name)["Body"].read(), key)

    def download(self, key: str, destination: Path) -> ObjectInfo:
        name = self._location.name(key)

        def fetch() -> ObjectInfo:
            response = self._client.get_object(Bucket=self._bucket, Key=name)

            def fill(stream: BinaryIO) -> None:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    stream.write(chunk)

            write_atomically(destination, fill)
            return _info(key, response["ContentLength"], response["ETag"], response["Metadata"].get(METADATA_SHA256))

        return self._call(fetch, key)

    def head(self, key: str) -> ObjectInfo:
        name = self._location.name(key)
        try:
            response = self._call(lambda: self._client.head_object(Bucket=self._bucket, Key=name), key)
        except ObjectNotFound:
            # A HEAD answer has no body, so its 404 does not say whether the key or the bucket is missing.
            self._call(lambda: self._client.head_bucket(Bucket=self._bucket), None)
            raise
        return _info(key, response["ContentLength"], response["ETag"], response["Metadata"].get(METADATA_SHA256))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        arguments = {"Bucket": self._bucket, "Prefix": self._location.name_prefix(prefix)}

        def page(token: str | None) -> tuple[list[ObjectInfo], str | None]:
            more = {"ContinuationToken": token} if token else {}
            response = self._call(lambda: self._client.list_objects_v2(**arguments, **more), None)
            infos = [
                _info(self._location.key(item["Key"]), item["Size"], item["ETag"], None)
                for item in response.get("Contents", [])
                if not item["Key"].endswith("/")  # "folder" markers made by consoles
            ]
            return infos, response.get("NextContinuationToken")

        return paginate(page)

    def delete(self, key: str) -> None:
        name = self._location.name(key)
        self._call(lambda: self._client.delete_object(Bucket=self._bucket, Key=name), key)

    def _call(self, operation: Callable[[], T], key: str | None) -> T:
        """Run one request about `key` (None: about the bucket) with retries and translated errors."""
        return retry.call(operation, lambda exc: self._translate(exc, key))

    def _translate(self, exc: Exception, key: str | None) -> StorageError | None:
        """The one place where boto3's exceptions become storage errors."""
        url = self._location.object_url(key)
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            return http_error(
                url,
                int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0),
                code,
                endpoint=self._endpoint,
                bucket_missing=code == "NoSuchBucket" or key is None,
                credentials_hint=_CREDENTIALS_HINT,
                transient=code in _TRANSIENT_CODES,
            )
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return AccessDenied(f"{url}: no usable AWS credentials ({type(exc).__name__}); set {_CREDENTIALS_HINT}")
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return unreachable(url, self._endpoint, exc)
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{url}: {type(exc).__name__}")
        return None


def _info(key: str, size: int, etag: str, sha256: str | None) -> ObjectInfo:
    token = etag.strip('"')
    return ObjectInfo(key=key, size=size, etag=token, sha256=sha256, md5=token if _MD5_ETAG.fullmatch(token) else None)
