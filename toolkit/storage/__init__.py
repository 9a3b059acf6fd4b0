"""One storage abstraction over S3, Google Cloud Storage, Azure Blob and the local filesystem."""

from toolkit.storage.base import ObjectInfo, ObjectStore, file_sha256, validate_key
from toolkit.storage.registry import open_store

__all__ = ["ObjectInfo", "ObjectStore", "file_sha256", "open_store", "validate_key"]
