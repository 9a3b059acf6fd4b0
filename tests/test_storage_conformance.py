"""One conformance suite for every storage backend: local disk, S3 on moto, GCS on fake-gcs-server and
Azure Blob on Azurite (the session's `emulators`). A backend joins by adding a case to `_open`.

Every test runs against a fresh prefix (or directory), so tests never see each other's objects.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toolkit.storage import ObjectStore, file_sha256, open_store, retry
from toolkit.storage.errors import (
    AccessDenied,
    BucketNotFound,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    StorageUnavailable,
)
from toolkit.storage.registry import StoreOptions

# backend -> URL scheme
SCHEMES = {"local": "file", "s3": "s3", "gcs": "gs", "azure": "az"}
BACKENDS = list(SCHEMES)
BUCKET = "mct-test"
# Dummy S3 keys that moto accepts; no message may ever contain the secret.
S3_KEY_ID, S3_SECRET = "conformance-key", "conformance-secret-never-shown"
# Over two parts of CHUNK_BYTES (8 MiB): the multipart / resumable / block-list paths run.
LARGE_BYTES = 17 * 1024 * 1024
# Where the provider returns an MD5 for every object we write (S3 only for single-part uploads).
MD5_ALWAYS = {"gcs", "azure"}
BAD_KEYS = ["../x", "/abs", "a/../../b", "", "a/./b", "a//b", "a/", "a\\b"]

OpenStore = Callable[..., ObjectStore]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str, bucket: str, endpoint: str | None
) -> ObjectStore:
    """A store of `backend` on `bucket` under `prefix`, at the emulator or at `endpoint` if given.

    Local buckets are folders of `tmp_path`; only `BUCKET` exists.
    """
    if backend == "local":
        root = tmp_path / bucket / prefix
        if bucket == BUCKET:
            root.mkdir(parents=True, exist_ok=True)
        return open_store(str(root))
    endpoints = request.getfixturevalue("emulators").endpoints
    connection_string = endpoints.azure_connection_string
    if endpoint is not None:
        connection_string = re.sub(
            r"BlobEndpoint=[^;]+", f"BlobEndpoint={endpoint}/devstoreaccount1", connection_string
        )
    options = {
        "s3": StoreOptions(endpoint=endpoint or endpoints.s3, access_key_id=S3_KEY_ID, secret_access_key=S3_SECRET),
        "gcs": StoreOptions(endpoint=endpoint or endpoints.gcs),
        "azure": StoreOptions(connection_string=connection_string),
    }[backend]
    return open_store(f"{SCHEMES[backend]}://{bucket}/{prefix}", options)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens stores of the current backend: `open_backend(prefix, bucket=BUCKET, endpoint=None)`."""

    def opener(prefix: str, bucket: str = BUCKET, endpoint: str | None = None) -> ObjectStore:
        return _open(backend, request, tmp_path, prefix, bucket, endpoint)

    return opener


@pytest.fixture
def store(open_backend: OpenStore) -> ObjectStore:
    return open_backend(f"conformance-{uuid.uuid4().hex[:12]}")


def test_small_bytes_round_trip(store: ObjectStore, backend: str) -> None:
    data = b"hello, conformance\n"
    info = store.put("greetings/hello.txt", data)
    assert (info.key, info.size, info.sha256) == ("greetings/hello.txt", len(data), _sha256(data))
    assert info.etag
    assert store.get("greetings/hello.txt") == data
    assert store.head("greetings/hello.txt") == info
    if backend == "local":
        assert info.md5 is None
    else:  # S3 gives one for single-part uploads
        assert info.md5 == hashlib.md5(data).hexdigest()


def test_large_file_round_trip_in_parts(store: ObjectStore, backend: str, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(LARGE_BYTES))
    digest = file_sha256(source)
    info = store.put("models/large.bin", source)
    assert (info.size, info.sha256) == (LARGE_BYTES, digest)
    if backend == "s3":
        assert info.etag.endswith("-3") and info.md5 is None  # a multipart upload of three parts
    if backend in MD5_ALWAYS:
        assert info.md5 == hashlib.md5(source.read_bytes()).hexdigest()
    assert store.head("models/large.bin").sha256 == digest
    destination = tmp_path / "downloaded" / "large.bin"
    downloaded = store.download("models/large.bin", destination)
    assert file_sha256(destination) == digest
    assert (downloaded.size, downloaded.etag, downloaded.sha256) == (LARGE_BYTES, info.etag, digest)


def test_missing_object(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match=re.escape(f"{store.url}/absent.txt")):
        store.head("absent.txt")
    with pytest.raises(ObjectNotFound):
        store.get("absent.txt")
    destination = tmp_path / "absent.txt"
    with pytest.raises(ObjectNotFound):
        store.download("absent.txt", destination)
    assert not destination.exists()
    assert not store.exists("absent.txt")
    store.delete("absent.txt")  # deleting a missing object is fine


def test_delete(store: ObjectStore) -> None:
    store.put("doomed.txt", b"soon gone")
    store.put("kept.txt", b"stays")
    store.delete("doomed.txt")
    with pytest.raises(ObjectNotFound):
        store.head("doomed.txt")
    assert [info.key for info in store.list()] == ["kept.txt"]
    store.delete("doomed.txt")


def test_list_by_prefix(store: ObjectStore, backend: str) -> None:
    contents = {"a/1.txt": b"one", "a/2.txt": b"two!", "ab.txt": b"three", "b/deep/1.txt": b"four"}
    for key, data in contents.items():
        store.put(key, data)

    def keys(prefix: str = "") -> list[str]:
        return sorted(info.key for info in store.list(prefix))

    assert keys() == sorted(contents)
    assert keys("a/") == ["a/1.txt", "a/2.txt"]
    assert keys("a") == ["a/1.txt", "a/2.txt", "ab.txt"]
    assert keys("b/deep/") == ["b/deep/1.txt"]
    assert keys("c") == []
    for info in store.list():
        assert info.size == len(contents[info.key])
        assert info.etag == store.head(info.key).etag
        # ListObjectsV2 carries no user metadata: S3 listings leave the SHA-256 to `head`.
        assert info.sha256 == (None if backend == "s3" else _sha256(contents[info.key]))


def test_keys_are_relative_to_the_store_prefix(open_backend: OpenStore) -> None:
    prefix = f"relative-{uuid.uuid4().hex[:12]}"
    parent = open_backend(prefix)
    child = open_backend(f"{prefix}/child")
    assert child.url == f"{parent.url}/child"
    child.put("x.txt", b"x")
    assert parent.get("child/x.txt") == b"x"
    assert [info.key for info in parent.list()] == ["child/x.txt"]
    assert [info.key for info in child.list()] == ["x.txt"]


def test_put_if_create_only(store: ObjectStore) -> None:
    created = store.put_if("pointer.json", b"v1", match=None)
    assert (created.size, created.sha256) == (2, _sha256(b"v1"))
    assert store.head("pointer.json").etag == created.etag
    with pytest.raises(PreconditionFailed, match=re.escape(f"{store.url}/pointer.json")):
        store.put_if("pointer.json", b"v2", match=None)
    assert store.get("pointer.json") == b"v1"


def test_put_if_compare_and_swap(store: ObjectStore) -> None:
    first = store.put_if("pointer.json", b"v1", match=None)
    second = store.put_if("pointer.json", b"v2", match=first.etag)
    assert second.etag != first.etag
    assert store.head("pointer.json") == second
    with pytest.raises(PreconditionFailed):
        store.put_if("pointer.json", b"v3", match=first.etag)
    assert store.get("pointer.json") == b"v2"
    plain = store.put("pointer.json", b"written without a condition")
    third = store.put_if("pointer.json", b"v3", match=plain.etag)  # a plain put's etag serves as well
    store.delete("pointer.json")
    with pytest.raises(PreconditionFailed):
        store.put_if("pointer.json", b"v4", match=third.etag)  # the object it was read from is gone


def test_concurrent_put_if_has_one_winner_per_round(store: ObjectStore) -> None:
    writers, rounds = 4, 3
    etag = store.put_if("pointer.json", b"start", match=None).etag
    barrier = threading.Barrier(writers)

    def payload(writer: int, round_number: int) -> bytes:
        return f"writer {writer} in round {round_number};".encode() * 2000  # ~50 KB: a torn write would show

    def attempt(writer: int, round_number: int, match: str) -> bool:
        barrier.wait()  # all writers fire together with the same etag
        try:
            store.put_if("pointer.json", payload(writer, round_number), match=match)
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(writers) as pool:
        for round_number in range(rounds):
            won = list(pool.map(attempt, range(writers), [round_number] * writers, [etag] * writers))
            assert sum(won) == 1, f"round {round_number}: {sum(won)} writers won"
            assert store.get("pointer.json") == payload(won.index(True), round_number)
            etag = store.head("pointer.json").etag


def test_invalid_keys_are_refused(store: ObjectStore, tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    destination = tmp_path / "downloads" / "file"
    for key in BAD_KEYS:
        operations: list[Callable[[], object]] = [
            lambda key=key: store.put(key, b"x"),
            lambda key=key: store.put_if(key, b"x", match=None),
            lambda key=key: store.get(key),
            lambda key=key: store.head(key),
            lambda key=key: store.download(key, destination),
            lambda key=key: store.delete(key),
            lambda key=key: store.exists(key),
        ]
        for operation in operations:
            with pytest.raises(InvalidKey):
                operation()
    for prefix in ("../", "/", "a/../../"):
        with pytest.raises(InvalidKey):
            list(store.list(prefix))
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere, inside the root or out


def test_local_symlink_cannot_lead_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = open_store(str(root))
    with pytest.raises(InvalidKey, match="resolves outside"):
        store.put("link/escaped.txt", b"x")
    with pytest.raises(InvalidKey):
        store.put_if("link/escaped.txt", b"x", match=None)
    assert list(outside.iterdir()) == []


def test_missing_bucket(open_backend: OpenStore, tmp_path: Path) -> None:
    store = open_backend("prefix", bucket=f"mct-missing-{uuid.uuid4().hex[:12]}")
    operations: list[Callable[[], object]] = [
        lambda: store.put("k.txt", b"x"),
        lambda: store.put_if("k.txt", b"x", match=None),
        lambda: store.get("k.txt"),
        lambda: store.head("k.txt"),
        lambda: store.download("k.txt", tmp_path / "k.txt"),
        lambda: list(store.list()),
        lambda: store.delete("k.txt"),
    ]
    for operation in operations:
        with pytest.raises(BucketNotFound) as caught:
            operation()
        assert store.url in str(caught.value)
    assert not (tmp_path / "k.txt").exists()


def _closed_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_service(backend: str, open_backend: OpenStore, request: pytest.FixtureRequest) -> None:
    if backend == "local":
        pytest.skip("local disk has no service that can be down")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = open_backend("down", endpoint=endpoint)
    account_key = re.search(
        r"AccountKey=([^;]+)", request.getfixturevalue("emulators").endpoints.azure_connection_string
    )
    assert account_key is not None
    for operation in (lambda: store.put("k.txt", b"x"), lambda: store.head("k.txt")):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            operation()
        assert time.monotonic() - started < 15
        message = str(caught.value)
        assert f"{store.url}/k.txt" in message and endpoint in message
        assert S3_SECRET not in message and account_key.group(1) not in message


def test_wrong_credentials_are_access_denied(backend: str, request: pytest.FixtureRequest) -> None:
    gaps = {
        "local": "local disk has file modes, not credentials",
        "s3": "moto accepts any credentials (it checks none unless its IAM emulation is switched on)",
        "gcs": "fake-gcs-server serves anonymous requests and checks no credentials",
    }
    if backend in gaps:
        pytest.skip(gaps[backend])
    wrong_key = "d3Jvbmcga2V5LCB3cm9uZyBrZXksIHdyb25nIGtleSE="
    connection_string = re.sub(
        r"AccountKey=[^;]+",
        f"AccountKey={wrong_key}",
        request.getfixturevalue("emulators").endpoints.azure_connection_string,
    )
    store = open_store(f"az://{BUCKET}/denied", StoreOptions(connection_string=connection_string))
    for operation in (lambda: store.put("k.txt", b"x"), lambda: store.head("k.txt"), lambda: list(store.list())):
        with pytest.raises(AccessDenied) as caught:
            operation()
        assert store.url in str(caught.value) and wrong_key not in str(caught.value)


def test_endpoint_and_credentials_from_the_environment(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "local":
        pytest.skip("local disk needs neither endpoint nor credentials")
    endpoints = request.getfixturevalue("emulators").endpoints
    environment = {
        "s3": {"AWS_ENDPOINT_URL": endpoints.s3, "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET},
        "gcs": {"STORAGE_EMULATOR_HOST": endpoints.gcs},
        "azure": {"AZURE_STORAGE_CONNECTION_STRING": endpoints.azure_connection_string},
    }[backend]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    store = open_store(f"{SCHEMES[backend]}://{BUCKET}/environment-{uuid.uuid4().hex[:12]}")
    store.put("k.txt", b"configured by the environment")
    assert store.get("k.txt") == b"configured by the environment"


def test_azure_without_a_connection_string_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    with pytest.raises(AccessDenied, match=r"az://mct-test/p: .*set AZURE_STORAGE_CONNECTION_STRING.*ACCOUNT_URL"):
        open_store("az://mct-test/p")


def test_azure_with_only_an_account_url_signs_in_with_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import DefaultAzureCredential

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://mctmodels.blob.core.windows.net")
    store = open_store("az://models/serving")  # nothing is sent until the first request
    container = store._container  # type: ignore[attr-defined]
    assert container.url.startswith("https://mctmodels.blob.core.windows.net/models")
    assert isinstance(container.credential, DefaultAzureCredential), "a managed identity, or `az login`"


def test_download_replaces_the_destination_whole_or_not_at_all(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = tmp_path / "downloads" / "model.onnx"
    destination.parent.mkdir()
    destination.write_bytes(b"old content")
    store.put("model.onnx", b"new content")

    def failing_replace(*_: object) -> None:
        raise OSError("disk trouble")

    with monkeypatch.context() as patched:  # fail at the last step, after the content has arrived
        patched.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk trouble"):
            store.download("model.onnx", destination)
    assert destination.read_bytes() == b"old content"
    with pytest.raises(ObjectNotFound):
        store.download("missing.onnx", destination)
    assert destination.read_bytes() == b"old content"
    info = store.download("model.onnx", destination)
    assert destination.read_bytes() == b"new content"
    assert info.sha256 == _sha256(b"new content")
    assert [path.name for path in destination.parent.iterdir()] == ["model.onnx"]  # no temporary file left


def test_retry_policy_retries_only_transient_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "backoff_seconds", lambda attempt: 0.0)
    calls: list[int] = []

    def failing(times: int, error: type[Exception]) -> Callable[[], str]:
        def operation() -> str:
            calls.append(1)
            if len(calls) <= times:
                raise error("boom")
            return "done"

        return operation

    def translate(exc: Exception) -> StorageUnavailable | AccessDenied | None:
        if isinstance(exc, ConnectionResetError):
            return StorageUnavailable("s3://b/k: reset")
        return AccessDenied("s3://b/k: denied") if isinstance(exc, PermissionError) else None

    assert retry.call(failing(retry.RETRY_ATTEMPTS - 1, ConnectionResetError), translate) == "done"
    assert len(calls) == retry.RETRY_ATTEMPTS
    calls.clear()
    with pytest.raises(StorageUnavailable, match=f"gave up after {retry.RETRY_ATTEMPTS} attempts"):
        retry.call(failing(retry.RETRY_ATTEMPTS, ConnectionResetError), translate)
    calls.clear()
    with pytest.raises(AccessDenied):
        retry.call(failing(1, PermissionError), translate)
    assert len(calls) == 1
    assert all(0 <= retry.backoff_seconds(n) <= retry.RETRY_MAX_DELAY_SECONDS for n in range(1, 10))
