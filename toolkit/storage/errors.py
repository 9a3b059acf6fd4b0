"""Storage errors: one cloud-neutral tree; each backend translates its SDK's exceptions in one place.

    StorageError
    ├── ObjectNotFound        (also FileNotFoundError)  the key does not exist
    ├── BucketNotFound        (also FileNotFoundError)  the bucket/container does not exist
    ├── AccessDenied          (also PermissionError)    credentials missing, wrong or not allowed
    ├── PreconditionFailed                              a conditional write lost the race
    ├── InvalidKey            (also ValueError)         a key that could escape its destination
    └── StorageUnavailable    (also ConnectionError)    transient trouble that outlasted the retries

Messages carry the URL and say what to check; they never contain credentials.
"""

from __future__ import annotations

from toolkit.errors import ToolkitError

__all__ = [
    "AccessDenied",
    "BucketNotFound",
    "InvalidKey",
    "ObjectNotFound",
    "PreconditionFailed",
    "StorageError",
    "StorageUnavailable",
]


class StorageError(ToolkitError):
    """Base of every storage failure."""

    exit_code = 1


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object does not exist."""


class BucketNotFound(StorageError, FileNotFoundError):
    """The bucket or container does not exist."""

    exit_code = 2


class AccessDenied(StorageError, PermissionError):
    """Credentials are missing, invalid, or lack permission."""

    exit_code = 2


class PreconditionFailed(StorageError):
    """A conditional write found the object changed (or present) since it was read."""


class InvalidKey(StorageError, ValueError):
    """A key that is empty, absolute, or climbs out of its prefix with `..`."""

    exit_code = 2


class StorageUnavailable(StorageError, ConnectionError):
    """The service did not answer, or kept failing transiently, within the retry budget."""
