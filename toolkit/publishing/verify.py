"""Verify what each cloud serves: pointer -> manifest -> every object's SHA-256, and drift between clouds."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import ValidationError

from toolkit.publishing.manifest import MANIFEST_FILE, Manifest, Pointer, pointer_key, version_prefix
from toolkit.storage import ObjectStore
from toolkit.storage.errors import ObjectNotFound, StorageError

__all__ = ["CloudVerification", "check_version", "verify_clouds"]

OK = "OK"
DRIFT = "DRIFT"


@dataclass
class CloudVerification:
    """What one cloud serves for an alias, and what is wrong with it."""

    cloud: str
    version: str | None = None
    files: int = 0
    status: str = OK
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK


def check_version(store: ObjectStore, manifest: Manifest, manifest_bytes: bytes | None = None) -> list[str]:
    """Read back every object of a version and compare size and SHA-256 with the manifest."""
    prefix = version_prefix(manifest.model, manifest.version)
    problems = []
    expected = [(entry.path, entry.sha256, entry.size) for entry in manifest.files]
    if manifest_bytes is not None:
        expected.append((MANIFEST_FILE, hashlib.sha256(manifest_bytes).hexdigest(), len(manifest_bytes)))
    for path, sha256, size in expected:
        try:
            content = store.get(prefix + path)
        except ObjectNotFound:
            problems.append(f"{path} is missing")
            continue
        if len(content) != size or hashlib.sha256(content).hexdigest() != sha256:
            problems.append(f"{path} does not match its manifest hash (altered or corrupt)")
    return problems


def verify_clouds(stores: dict[str, ObjectStore], model: str, alias: str = "champion") -> list[CloudVerification]:
    """Verify every cloud in parallel, then mark clouds that serve another version than the others."""
    with ThreadPoolExecutor(max_workers=max(1, len(stores))) as pool:
        futures = [pool.submit(_verify_one, cloud, store, model, alias) for cloud, store in stores.items()]
        results = [future.result() for future in futures]
    versions = {result.version for result in results if result.version is not None}
    if len(versions) > 1:
        newest = max(versions, key=int)
        for result in results:
            if result.ok and result.version != newest:
                result.status = DRIFT
                result.problems.append(f"serves v{result.version} while another cloud serves v{newest}")
    return results


def _verify_one(cloud: str, store: ObjectStore, model: str, alias: str) -> CloudVerification:
    result = CloudVerification(cloud)
    try:
        pointer = Pointer.model_validate_json(store.get(pointer_key(model, alias)))
        result.version = pointer.version
        manifest_bytes = store.get(pointer.manifest)
        if hashlib.sha256(manifest_bytes).hexdigest() != pointer.manifest_sha256:
            result.status, result.problems = "MISMATCH", ["the manifest does not match the pointer's hash"]
            return result
        manifest = Manifest.model_validate_json(manifest_bytes)
        result.files = len(manifest.files) + 1
        result.problems = check_version(store, manifest)
    except ObjectNotFound as exc:
        result.status, result.problems = "MISSING", [str(exc)]
        return result
    except ValidationError:
        result.status, result.problems = "MISMATCH", ["the pointer or manifest is not valid JSON of the expected shape"]
        return result
    except StorageError as exc:
        result.status, result.problems = "UNREACHABLE", [str(exc)]
        return result
    if result.problems:
        result.status = "MISSING" if all("missing" in problem for problem in result.problems) else "MISMATCH"
    return result
