"""The configured clouds as object stores: emulated ones reach the emulators `mct emulators up` started."""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.config import CloudConfig, Settings
from toolkit.errors import ConfigError
from toolkit.storage import ObjectStore, open_store
from toolkit.storage.registry import StoreOptions, split_url

__all__ = ["cloud_store", "cloud_stores", "emulator_buckets", "emulator_of", "select_clouds"]

# The emulator (by its `cloud` in the emulator catalog) that plays each URL scheme.
EMULATOR_OF_SCHEME = {"s3": "s3", "gs": "gcs", "az": "azure"}

# moto accepts any credentials; these make boto3 sign requests without looking for real ones.
EMULATOR_CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def select_clouds(settings: Settings, names: Iterable[str] | None) -> dict[str, CloudConfig]:
    """The named clouds (all configured ones when `names` is empty), in configuration order."""
    wanted = [name for name in (names or []) if name]
    unknown = [name for name in wanted if name not in settings.clouds]
    if unknown:
        raise ConfigError(f"unknown cloud {unknown[0]!r}; configured: {', '.join(settings.clouds)}")
    return {name: cloud for name, cloud in settings.clouds.items() if not wanted or name in wanted}


def cloud_stores(settings: Settings, names: Iterable[str] | None = None) -> dict[str, ObjectStore]:
    """An object store per selected cloud."""
    return {name: cloud_store(settings, name) for name in select_clouds(settings, names)}


def cloud_store(settings: Settings, name: str, subpath: str = "") -> ObjectStore:
    """The store of one configured cloud, optionally narrowed to a sub-prefix."""
    cloud = select_clouds(settings, [name])[name]
    url = cloud.url.rstrip("/") + ("/" + subpath.strip("/") if subpath.strip("/") else "")
    return open_store(url, _options(settings, cloud))


def _options(settings: Settings, cloud: CloudConfig) -> StoreOptions:
    if not cloud.emulator:
        return StoreOptions(endpoint=cloud.endpoint)
    from toolkit.emulators import read_state

    state = read_state(settings.home)
    if state is None:
        raise ConfigError("the local cloud emulators are not running: start them with `mct emulators up`")
    endpoints = state.endpoints
    scheme = split_url(cloud.url)[0]
    if scheme == "s3":
        return StoreOptions(endpoint=endpoints.s3, **EMULATOR_CREDENTIALS)
    if scheme == "gs":
        return StoreOptions(endpoint=endpoints.gcs)
    return StoreOptions(connection_string=endpoints.azure_connection_string)


def emulator_buckets(settings: Settings) -> dict[str, list[str]]:
    """Buckets the emulators must create for the emulated clouds, by emulator."""
    buckets: dict[str, list[str]] = {"s3": [], "gcs": [], "azure": []}
    for cloud in settings.clouds.values():
        scheme, bucket, _ = split_url(cloud.url)
        if cloud.emulator and scheme in EMULATOR_OF_SCHEME:
            buckets[EMULATOR_OF_SCHEME[scheme]].append(bucket)
    return buckets


def emulator_of(settings: Settings, name: str) -> str | None:
    """The emulator (s3, gcs or azure) that plays configured cloud `name`; None for a real cloud."""
    cloud = select_clouds(settings, [name])[name]
    return EMULATOR_OF_SCHEME.get(split_url(cloud.url)[0]) if cloud.emulator else None
