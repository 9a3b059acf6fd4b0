"""Publish and verify a registered model on the three emulated clouds (real emulator processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud_stores import emulated_store, three_clouds
from toolkit.config import load_settings
from toolkit.data import load_dataset
from toolkit.publishing.export import ExportedBundle, export_bundle
from toolkit.publishing.manifest import Pointer, pointer_key, version_prefix
from toolkit.publishing.publish import publish_bundle
from toolkit.publishing.verify import verify_clouds
from toolkit.storage import ObjectInfo, ObjectStore
from toolkit.storage.errors import StorageUnavailable
from toolkit.tracking.promotion import promote, rollback
from toolkit.tracking.runs import log_training
from toolkit.tracking.store import open_store as open_tracking
from toolkit.training.options import build_options
from toolkit.training.trainer import train

MODEL = "publish-test"


@pytest.fixture(scope="module")
def bundles(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ExportedBundle]]:
    """Versions 1 and 2 of a registered model, exported from MLflow."""
    tracking = open_tracking(load_settings())
    options = build_options(n_jobs=1, cv_folds=3, space={"C": [1.0]})
    data = load_dataset("breast_cancer")
    for _ in range(2):
        log_training(tracking, train(data, options), MODEL)
    root = tmp_path_factory.mktemp("bundles")
    yield {version: export_bundle(tracking, MODEL, version, root / version) for version in ("1", "2")}


def _pointer(store: ObjectStore) -> Pointer:
    return Pointer.model_validate_json(store.get(pointer_key(MODEL, "champion")))


def test_publish_then_verify_on_all_three_clouds(emulators, bundles) -> None:
    stores = three_clouds(emulators)
    results = publish_bundle(bundles["1"], stores)
    assert [(r.cloud, r.ok, r.pointer, len(r.uploaded)) for r in results] == [
        ("aws", True, "moved", 4),
        ("gcp", True, "moved", 4),
        ("azure", True, "moved", 4),
    ]
    checks = verify_clouds(stores, MODEL)
    assert [(c.cloud, c.version, c.files, c.status) for c in checks] == [
        ("aws", "1", 4, "OK"),
        ("gcp", "1", 4, "OK"),
        ("azure", "1", 4, "OK"),
    ]
    contents = {cloud: store.get(version_prefix(MODEL, "1") + "model.onnx") for cloud, store in stores.items()}
    assert len(set(contents.values())) == 1, "byte-for-byte identical on every cloud"
    again = publish_bundle(bundles["1"], stores)
    assert all(r.pointer == "already current" and not r.uploaded and len(r.skipped) == 4 for r in again)


class FailingStore(ObjectStore):
    """Delegates to a real store but fails the n-th upload, as a connection cut mid-publish would."""

    def __init__(self, inner: ObjectStore, fail_at: int) -> None:
        self.inner, self.url, self.fail_at, self.puts = inner, inner.url, fail_at, 0

    def put(self, key: str, source: bytes | Path, *, sha256: str | None = None) -> ObjectInfo:
        self.puts += 1
        if self.puts == self.fail_at:
            raise StorageUnavailable(f"{self.url}/{key}: connection reset (injected)")
        return self.inner.put(key, source, sha256=sha256)

    def put_if(self, key: str, data: bytes, *, match: str | None) -> ObjectInfo:
        return self.inner.put_if(key, data, match=match)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def download(self, key: str, destination: Path) -> ObjectInfo:
        return self.inner.download(key, destination)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_an_interrupted_publish_keeps_the_old_pointer_and_a_rerun_completes(emulators, bundles) -> None:
    stores = three_clouds(emulators)
    publish_bundle(bundles["1"], stores)
    flaky = FailingStore(stores["gcp"], fail_at=2)
    results = publish_bundle(bundles["2"], {**stores, "gcp": flaky})
    by_cloud = {result.cloud: result for result in results}
    assert not by_cloud["gcp"].ok and "connection reset" in (by_cloud["gcp"].error or "")
    assert by_cloud["aws"].ok and by_cloud["azure"].ok
    assert _pointer(stores["gcp"]).version == "1", "the failed cloud stays on its old pointer"
    drift = {check.cloud: check.status for check in verify_clouds(stores, MODEL)}
    assert drift == {"aws": "OK", "gcp": "DRIFT", "azure": "OK"}
    resumed = publish_bundle(bundles["2"], {"gcp": stores["gcp"]})[0]
    assert resumed.ok and len(resumed.skipped) == 1 and len(resumed.uploaded) == 3
    assert {check.status for check in verify_clouds(stores, MODEL)} == {"OK"}


def test_verify_catches_a_tampered_and_a_missing_object(emulators, bundles) -> None:
    stores = three_clouds(emulators)
    publish_bundle(bundles["1"], stores)
    prefix = version_prefix(MODEL, "1")
    stores["aws"].put(prefix + "model.onnx", b"not the model")
    stores["azure"].delete(prefix + "model_card.md")
    checks = {check.cloud: check for check in verify_clouds(stores, MODEL)}
    assert checks["aws"].status == "MISMATCH" and "model.onnx" in checks["aws"].problems[0]
    assert checks["azure"].status == "MISSING" and "model_card.md" in checks["azure"].problems[0]
    assert checks["gcp"].status == "OK"


def test_published_versions_are_never_overwritten(emulators, bundles) -> None:
    store = emulated_store(emulators, "s3")
    store.put(version_prefix(MODEL, "1") + "model.onnx", b"someone else's bytes")
    result = publish_bundle(bundles["1"], {"aws": store})[0]
    assert not result.ok and "immutable" in (result.error or "")
    assert not store.exists(pointer_key(MODEL, "champion"))


def test_a_cloud_that_is_down_fails_alone(emulators, bundles) -> None:
    from toolkit.clouds import EMULATOR_CREDENTIALS
    from toolkit.storage import open_store
    from toolkit.storage.registry import StoreOptions

    down = open_store("s3://mct-test/x", StoreOptions(endpoint="http://127.0.0.1:9", **EMULATOR_CREDENTIALS))
    results = publish_bundle(bundles["1"], {"aws": down, "gcp": emulated_store(emulators, "gcs")})
    assert [result.ok for result in results] == [False, True]
    assert "127.0.0.1:9" in (results[0].error or "") or "mct-test" in (results[0].error or "")


def test_a_rollback_published_after_a_promotion_moves_the_pointer_back(emulators, tmp_path: Path) -> None:
    settings = load_settings()
    tracking = open_tracking(settings)
    model = "rollback-publish-test"
    result = train(load_dataset("breast_cancer"), build_options(n_jobs=1, cv_folds=3, space={"C": [1.0]}))
    for _ in range(2):
        log_training(tracking, result, model)
    store = {"gcp": emulated_store(emulators, "gcs")}

    def publish_champion(folder: str) -> str:
        bundle = export_bundle(tracking, model, "@champion", tmp_path / folder)
        (published,) = publish_bundle(bundle, store)
        assert published.ok, published.error
        return published.pointer

    promote(tracking, model, "1", settings.promotion)
    promote(tracking, model, "2", settings.promotion)
    stale = export_bundle(tracking, model, "@champion", tmp_path / "stale")  # v2, exported before the rollback
    assert publish_champion("v2") == "moved"
    rollback(tracking, model)
    assert publish_champion("rolled-back") == "moved"
    pointer = Pointer.model_validate_json(store["gcp"].get(pointer_key(model, "champion")))
    assert (pointer.version, pointer.generation) == ("1", 3)
    (late,) = publish_bundle(stale, store)
    assert late.ok and late.pointer == "left at v1, published later", "a stale publisher must not undo a rollback"


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_concurrent_publishers_leave_a_whole_pointer_at_the_newest_version(emulators, bundles, kind: str) -> None:
    store = emulated_store(emulators, kind)
    barrier = threading.Barrier(4)
    results = []

    def publisher(version: str) -> None:
        barrier.wait()
        results.extend(publish_bundle(bundles[version], {kind: store}))

    threads = [threading.Thread(target=publisher, args=(version,)) for version in ("1", "2", "1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.ok for result in results)
    assert _pointer(store).version == "2"
    assert [check.status for check in verify_clouds({kind: store}, MODEL)] == ["OK"]
