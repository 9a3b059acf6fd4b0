"""Fetch a published version from a cloud's store, verify every byte, and load it into a `LoadedModel`.

The chain of trust is the published layout's: the pointer names a manifest and its SHA-256; the manifest
names each file with its SHA-256 and size. Nothing is parsed or loaded before its hash matched, and
the model is ONNX run by onnxruntime: nothing from a bucket is ever unpickled.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import ValidationError

from serving.server.inputs import FeatureBatch, InputSchema
from serving.server.model import LoadedModel
from toolkit.bundle.card import CARD_FILE, ONNX_FILE, ModelCard
from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.publishing.manifest import Manifest, Pointer, pointer_key, version_prefix
from toolkit.storage import ObjectStore
from toolkit.storage.errors import ObjectNotFound

__all__ = ["BundleRejected", "load_version", "read_pointer"]


class BundleRejected(Exception):
    """A published version that must not be served: altered, incomplete, inconsistent or not loadable."""


def read_pointer(store: ObjectStore, model: str, alias: str) -> Pointer:
    """The alias's pointer; `ObjectNotFound` when nothing is published, `BundleRejected` when it is not valid."""
    data = store.get(pointer_key(model, alias))
    try:
        pointer = Pointer.model_validate_json(data)
    except ValidationError:
        raise BundleRejected(f"{store.url}/{pointer_key(model, alias)} is not a valid pointer") from None
    if pointer.model != model:
        raise BundleRejected(
            f"{store.url}/{pointer_key(model, alias)} points to model {pointer.model!r}, not {model!r}"
        )
    return pointer


def load_version(store: ObjectStore, pointer: Pointer, max_rows: int) -> LoadedModel:
    """Download and verify the version `pointer` names, then load and test-run it.

    Raises `BundleRejected` for anything wrong with the version itself, and the store's `StorageError`
    when the store cannot be read (worth retrying, unlike a rejection).
    """
    where = f"{store.url}/{pointer.manifest}"
    manifest_bytes = _get(store, pointer.manifest)
    if _sha256(manifest_bytes) != pointer.manifest_sha256:
        raise BundleRejected(f"{where} does not match the SHA-256 in the pointer (altered or corrupt)")
    try:
        manifest = Manifest.model_validate_json(manifest_bytes)
    except ValidationError:
        raise BundleRejected(f"{where} is not a valid manifest") from None
    if (manifest.model, manifest.version) != (pointer.model, pointer.version):
        raise BundleRejected(
            f"{where} describes {manifest.model} v{manifest.version}, but the pointer names v{pointer.version}"
        )
    files = _verified_files(store, manifest)
    if ONNX_FILE not in files or CARD_FILE not in files:
        raise BundleRejected(f"{where} lists no {ONNX_FILE} or no {CARD_FILE}")
    try:
        card = ModelCard.model_validate_json(files[CARD_FILE])
    except ValidationError:
        raise BundleRejected(f"{where}: {CARD_FILE} is not a valid model card") from None
    if [feature.name for feature in card.features] != manifest.features or card.classes != manifest.classes:
        raise BundleRejected(f"{where}: the model card's features or classes differ from the manifest's")
    schema = InputSchema.from_card(card, max_rows)
    try:
        classifier = OnnxClassifier(files[ONNX_FILE], card.features)
    except Exception as exc:  # onnxruntime raises its own exception types for models it cannot load
        raise BundleRejected(f"{where}: onnxruntime cannot load {ONNX_FILE}: {_first_line(exc)}") from None
    loaded = LoadedModel(
        name=manifest.model,
        version=manifest.version,
        manifest_sha256=pointer.manifest_sha256,
        manifest=manifest,
        card=card,
        classifier=classifier,
        schema=schema,
    )
    _test_run(loaded, where)
    return loaded


def _verified_files(store: ObjectStore, manifest: Manifest) -> dict[str, bytes]:
    prefix = version_prefix(manifest.model, manifest.version)
    files = {}
    for entry in manifest.files:
        content = _get(store, prefix + entry.path)
        if len(content) != entry.size or _sha256(content) != entry.sha256:
            raise BundleRejected(
                f"{store.url}/{prefix}{entry.path} does not match its manifest hash (altered or corrupt)"
            )
        files[entry.path] = content
    return files


def _test_run(model: LoadedModel, where: str) -> None:
    """One prediction on a row of missing values: a model that loads but cannot run is refused here."""
    row = {name: [None] for name in model.schema.names}
    try:
        batch = FeatureBatch({name: model.schema.column(name, values) for name, values in row.items()}, 1)
        probabilities = model.predict(batch).probabilities
    except Exception as exc:  # whatever onnxruntime raises: the version is unusable either way
        raise BundleRejected(f"{where}: a test prediction failed: {_first_line(exc)}") from None
    if probabilities.shape != (1, len(model.manifest.classes)) or not np.isfinite(probabilities).all():
        raise BundleRejected(f"{where}: a test prediction gave {probabilities.shape} probabilities, not one per class")


def _get(store: ObjectStore, key: str) -> bytes:
    """An object the version needs; its absence makes the version incomplete, not the store unreachable."""
    try:
        return store.get(key)
    except ObjectNotFound:
        raise BundleRejected(f"{store.url}/{key} is missing: the version is incomplete") from None


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
