"""Stores on the three emulators (and a local folder), each under a fresh prefix, for tests."""

from __future__ import annotations

import uuid
from pathlib import Path

from toolkit.clouds import EMULATOR_CREDENTIALS
from toolkit.storage import ObjectStore, open_store
from toolkit.storage.registry import StoreOptions

BUCKET = "mct-test"


def emulated_store(emulators, kind: str, prefix: str | None = None) -> ObjectStore:
    """A store on one emulator (`s3`, `gcs` or `azure`) in the test bucket, under `prefix`."""
    prefix = prefix or uuid.uuid4().hex[:12]
    endpoints = emulators.endpoints
    if kind == "s3":
        return open_store(f"s3://{BUCKET}/{prefix}", StoreOptions(endpoint=endpoints.s3, **EMULATOR_CREDENTIALS))
    if kind == "gcs":
        return open_store(f"gs://{BUCKET}/{prefix}", StoreOptions(endpoint=endpoints.gcs))
    return open_store(f"az://{BUCKET}/{prefix}", StoreOptions(connection_string=endpoints.azure_connection_string))


def three_clouds(emulators) -> dict[str, ObjectStore]:
    """aws, gcp and azure stores sharing one fresh prefix."""
    prefix = uuid.uuid4().hex[:12]
    return {
        "aws": emulated_store(emulators, "s3", prefix),
        "gcp": emulated_store(emulators, "gcs", prefix),
        "azure": emulated_store(emulators, "azure", prefix),
    }


def local_store(root: Path) -> ObjectStore:
    root.mkdir(parents=True, exist_ok=True)
    return open_store(str(root))
