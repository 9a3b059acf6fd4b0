"""The router's configuration, engine-neutral: what to route to and how, validated once.

`router_config` builds it from the settings (embedded defaults, `mct.toml`, `MCT_*` variables) and the
command line's flags, which override them. The built-in engine runs a `RouterConfig`; a production engine
(HAProxy) renders the same object, so nothing here is specific to the Python proxy.

Backends are the clouds' `serving_urls`: a cloud with one URL gives one backend named after the cloud, a
cloud with several gives `NAME-1`, `NAME-2`, ... Tiers and weights are set per cloud. A request body larger
than the model servers accept (`serving.max_body_bytes`) is refused by the router itself (413).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from serving.router.policies import DEFAULT_POLICY, policy_names
from toolkit.config import RouterSettings, Settings, load_settings
from toolkit.errors import ConfigError

__all__ = [
    "BackendSpec",
    "EjectionConfig",
    "HealthConfig",
    "RetryConfig",
    "RouterConfig",
    "RouterFlags",
    "load_router_config",
    "router_config",
]

# Backend names appear in URL paths (/router/backends/NAME/drain), headers and metric labels.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One model server URL as the router reaches it."""

    name: str
    cloud: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str  # prefix of every proxied path, without a trailing slash ("" for none)
    tier: int = 0
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Active checks: GET `path` every `interval_seconds`; thresholds count consecutive results."""

    path: str
    interval_seconds: float
    timeout_seconds: float
    healthy_threshold: int
    unhealthy_threshold: int


@dataclass(frozen=True, slots=True)
class EjectionConfig:
    """Passive outlier ejection: consecutive failed tries eject a backend with a growing back-off."""

    after_failures: int
    base_seconds: float
    max_seconds: float
    max_ejected_percent: int


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Which answers are retried on another backend, how often, how long each try may take."""

    max_retries: int
    per_try_timeout_seconds: float
    budget_percent: float
    budget_min_per_second: float
    statuses: frozenset[int]
    hedge_after_seconds: float | None


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything a router engine needs, validated: listen address, backends, policy and semantics."""

    host: str
    port: int
    policy: str
    backends: tuple[BackendSpec, ...]
    health: HealthConfig
    ejection: EjectionConfig
    retry: RetryConfig
    admin_token: str | None
    max_body_bytes: int
    reuse_port: bool = False
    engine: str = "builtin"
    metrics_port: int | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for people and scripts, with the admin token masked."""
        document = asdict(self)
        document["admin_token"] = "set" if self.admin_token else None
        document["retry"]["statuses"] = sorted(self.retry.statuses)
        return document


@dataclass(frozen=True)
class RouterFlags:
    """Command-line overrides; None (or empty) keeps the configured value.

    `backends` are `NAME=URL` strings and replace the configured clouds' URLs altogether; `weights` and
    `tiers` are `NAME=VALUE` strings merged over the configured ones.
    """

    host: str | None = None
    port: int | None = None
    backends: tuple[str, ...] = ()
    policy: str | None = None
    weights: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    admin_token: str | None = None
    reuse_port: bool | None = None
    engine: str | None = None
    metrics_port: int | None = None
    per_try_timeout_seconds: float | None = None
    max_retries: int | None = None
    hedge_after_seconds: float | None = None


def load_router_config(flags: RouterFlags | None = None) -> RouterConfig:
    """Read the settings again and apply the flags: what `mct route` runs, and re-runs on SIGHUP."""
    return router_config(load_settings(), flags or RouterFlags())


def router_config(settings: Settings, flags: RouterFlags | None = None) -> RouterConfig:
    """Merge the flags over `settings.router` and the clouds, and validate the result."""
    flags = flags or RouterFlags()
    router = _merged_router_settings(settings.router, flags)
    urls = _backend_urls(flags.backends) if flags.backends else _configured_urls(settings)
    if not urls:
        raise ConfigError("no backend to route to: give a cloud `serving_urls` in mct.toml or pass --backend NAME=URL")
    _check_policy(router.policy)
    # A tier or weight may name a cloud that --backend left out, not one that exists nowhere (a typo).
    known = set(settings.clouds) | set(urls)
    for setting, values in (("tiers", router.tiers), ("weights", router.weights)):
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"router.{setting} names {', '.join(unknown)}, which is not a cloud (routing to: {', '.join(urls)})"
            )
    for cloud, weight in router.weights.items():
        if weight <= 0:
            raise ConfigError(f"router.weights: the weight of {cloud} must be positive, not {weight}")
    for cloud, tier in router.tiers.items():
        if tier < 0:
            raise ConfigError(f"router.tiers: the tier of {cloud} must be 0 (preferred) or more, not {tier}")
    backends = tuple(_backends(urls, router))
    return RouterConfig(
        host=router.host,
        port=router.port,
        policy=router.policy,
        backends=backends,
        health=_health(router),
        ejection=_ejection(router),
        retry=_retry(router),
        admin_token=router.admin_token or None,
        max_body_bytes=settings.serving.max_body_bytes,
        reuse_port=router.reuse_port,
        engine=router.engine,
        metrics_port=router.metrics_port,
    )


def _merged_router_settings(configured: RouterSettings, flags: RouterFlags) -> RouterSettings:
    data = configured.model_dump()
    simple = {
        "host": flags.host,
        "port": flags.port,
        "policy": flags.policy,
        "admin_token": flags.admin_token,
        "reuse_port": flags.reuse_port,
        "engine": flags.engine,
        "metrics_port": flags.metrics_port,
        "per_try_timeout_seconds": flags.per_try_timeout_seconds,
        "max_retries": flags.max_retries,
        "hedge_after_seconds": flags.hedge_after_seconds,
    }
    data.update({name: value for name, value in simple.items() if value is not None})
    data["weights"] = {**data["weights"], **_assignments("--weight", flags.weights, float)}
    data["tiers"] = {**data["tiers"], **_assignments("--tier", flags.tiers, int)}
    try:
        return RouterSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid setting router.{where}: {first['msg']}") from None


def _assignments(flag: str, items: Iterable[str], kind: type[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            values[name.strip()] = kind(raw.strip())
        except ValueError:
            raise ConfigError(f"{flag} {item!r} is not NAME={kind.__name__.upper()}") from None
    return values


def _backend_urls(items: Iterable[str]) -> dict[str, list[str]]:
    urls: dict[str, list[str]] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ConfigError(f"--backend {item!r} is not NAME=URL (e.g. aws=http://127.0.0.1:8001)")
        urls.setdefault(name.strip(), []).append(url.strip())
    return urls


def _configured_urls(settings: Settings) -> dict[str, list[str]]:
    return {name: list(cloud.serving_urls) for name, cloud in settings.clouds.items() if cloud.serving_urls}


def _check_policy(policy: str) -> None:
    if policy not in policy_names():
        choices = ", ".join(f"{name} (default)" if name == DEFAULT_POLICY else name for name in policy_names())
        raise ConfigError(f"unknown router policy {policy!r}: choose one of {choices}")


def _backends(urls: dict[str, list[str]], router: RouterSettings) -> list[BackendSpec]:
    backends: list[BackendSpec] = []
    seen: dict[str, str] = {}
    for cloud, cloud_urls in urls.items():
        if not NAME_PATTERN.fullmatch(cloud):
            raise ConfigError(f"cloud name {cloud!r} must be letters, digits, '.', '_' or '-' (at most 63)")
        for index, url in enumerate(cloud_urls, start=1):
            name = cloud if len(cloud_urls) == 1 else f"{cloud}-{index}"
            scheme, host, port, base_path = _parse_url(name, url)
            key = f"{scheme}://{host}:{port}{base_path}"
            if key in seen:
                raise ConfigError(f"backends {seen[key]} and {name} have the same URL {url}")
            seen[key] = name
            backends.append(
                BackendSpec(
                    name=name,
                    cloud=cloud,
                    url=url,
                    scheme=scheme,
                    host=host,
                    port=port,
                    base_path=base_path,
                    tier=router.tiers.get(cloud, 0),
                    weight=router.weights.get(cloud, 1.0),
                )
            )
    names = [backend.name for backend in backends]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"backend name {duplicates[0]} is used twice: rename the cloud or its URLs")
    return backends


def _parse_url(name: str, url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"backend {name}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"backend {name}: {url!r} must be http://HOST[:PORT][/PATH] or https://...")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"backend {name}: {url!r} must not carry a query, fragment or credentials")
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/")


def _health(router: RouterSettings) -> HealthConfig:
    if not router.health_path.startswith("/"):
        raise ConfigError(f"router.health_path {router.health_path!r} must start with '/'")
    if router.health_timeout_seconds > router.health_interval_seconds:
        raise ConfigError(
            f"router.health_timeout_seconds ({router.health_timeout_seconds}) must not exceed "
            f"router.health_interval_seconds ({router.health_interval_seconds})"
        )
    return HealthConfig(
        path=router.health_path,
        interval_seconds=router.health_interval_seconds,
        timeout_seconds=router.health_timeout_seconds,
        healthy_threshold=router.healthy_threshold,
        unhealthy_threshold=router.unhealthy_threshold,
    )


def _ejection(router: RouterSettings) -> EjectionConfig:
    if router.eject_base_seconds > router.eject_max_seconds:
        raise ConfigError(
            f"router.eject_base_seconds ({router.eject_base_seconds}) must not exceed "
            f"router.eject_max_seconds ({router.eject_max_seconds})"
        )
    return EjectionConfig(
        after_failures=router.eject_after_failures,
        base_seconds=router.eject_base_seconds,
        max_seconds=router.eject_max_seconds,
        max_ejected_percent=router.max_ejected_percent,
    )


def _retry(router: RouterSettings) -> RetryConfig:
    wrong = sorted(status for status in router.retry_statuses if not 500 <= status <= 599)
    if wrong:
        raise ConfigError(f"router.retry_statuses: {wrong[0]} is not a 5xx status (client errors are never retried)")
    hedge = router.hedge_after_seconds
    if hedge is not None and hedge >= router.per_try_timeout_seconds:
        raise ConfigError(
            f"router.hedge_after_seconds ({hedge}) must be shorter than "
            f"router.per_try_timeout_seconds ({router.per_try_timeout_seconds})"
        )
    return RetryConfig(
        max_retries=router.max_retries,
        per_try_timeout_seconds=router.per_try_timeout_seconds,
        budget_percent=router.retry_budget_percent,
        budget_min_per_second=router.retry_budget_min_per_second,
        statuses=frozenset(router.retry_statuses),
        hedge_after_seconds=hedge,
    )
