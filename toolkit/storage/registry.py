"""From URL to store: `s3://`, `gs://`, `az://`, `file://` or a plain path; backends import lazily.

Endpoints for emulators or S3-compatible stores come from the standard environment variables
(`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`, `AZURE_STORAGE_CONNECTION_STRING`) or, overriding them,
from `StoreOptions`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from urllib.parse import urlparse

from toolkit.errors import ConfigError
from toolkit.storage.base import ObjectStore

__all__ = ["BACKENDS", "StoreOptions", "open_store", "split_url"]

# scheme -> (module, class, the package to install when the import fails)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "s3": ("toolkit.storage.s3", "S3Store", "boto3"),
    "gs": ("toolkit.storage.gcs", "GcsStore", "google-cloud-storage"),
    "az": ("toolkit.storage.azure", "AzureBlobStore", "azure-storage-blob"),
    "file": ("toolkit.storage.local", "LocalStore", ""),
}


@dataclass(frozen=True)
class StoreOptions:
    """How to reach a store when not the provider's defaults; no field is ever logged.

    `endpoint`: S3-compatible endpoint URL (S3), or emulator base URL with anonymous access (GCS).
    `connection_string`: Azure Storage connection string.
    `access_key_id`, `secret_access_key`, `region`: S3 credentials and region.
    """

    endpoint: str | None = None
    connection_string: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None

    def __repr__(self) -> str:
        return f"StoreOptions(endpoint={self.endpoint!r}, ...)"


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or root, prefix) of a store URL; plain paths are `file`."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # a plain or Windows-style path
        path = parsed.path if parsed.scheme == "file" else url
        return "file", path, ""
    if parsed.scheme not in BACKENDS:
        raise ConfigError(f"unsupported storage URL {url!r}: use s3://, gs://, az://, file:// or a path")
    if not parsed.netloc:
        raise ConfigError(f"storage URL {url!r} names no bucket or container")
    return parsed.scheme, parsed.netloc, parsed.path.strip("/")


def open_store(url: str, options: StoreOptions | None = None) -> ObjectStore:
    """The store for `url`; the missing SDK, if any, is named with what to install."""
    scheme, bucket, prefix = split_url(url)
    module_name, class_name, package = BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{url} needs the {package} package: pip install {package} ({exc})") from None
    store_class = getattr(module, class_name)
    store: ObjectStore = store_class.from_url(bucket, prefix, options or StoreOptions())
    return store
