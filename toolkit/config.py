"""Settings: embedded defaults, overridden by `mct.toml`, overridden by `MCT_*` environment variables.

The file is `./mct.toml`, or the path in `MCT_CONFIG`. Nested keys use `__` in the environment,
e.g. `MCT_PROMOTION__TOLERANCE=0.02` or `MCT_TRAINING__CV_FOLDS=3`. Between the defaults and that file
sits `mct.toml` in the data directory, which the toolkit writes itself (`mct infra up` records the clouds
it deployed there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from toolkit.errors import ConfigError

__all__ = [
    "CloudConfig",
    "PromotionPolicy",
    "RouterSettings",
    "ServingSettings",
    "Settings",
    "TrainingDefaults",
    "data_config_file",
    "load_settings",
]

CONFIG_FILE_ENV = "MCT_CONFIG"
DEFAULT_CONFIG_FILE = "mct.toml"
DEFAULT_HOME = Path(".mct")


class TrainingDefaults(BaseModel):
    """Defaults for `mct train` that its flags override."""

    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    cv_folds: int = Field(5, ge=2)
    seed: int = 42
    # Two cores are the common CI size; -1 uses every core the machine has.
    n_jobs: int = -1
    random_iterations: int = Field(20, ge=1)
    # A train-minus-holdout gap in the scoring metric above this is reported as overfitting.
    overfit_gap: float = Field(0.05, ge=0.0)
    # Variance inflation above this marks a feature as collinear with the others (the usual rule).
    vif_limit: float = Field(10.0, gt=1.0)
    # A single feature whose own ROC AUC reaches this separates the classes "almost perfectly".
    leakage_auc: float = Field(0.99, gt=0.5, le=1.0)


class PromotionPolicy(BaseModel):
    """The quality gate a registered version must pass to take an alias."""

    min_metrics: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.8})
    # The candidate may trail the champion by at most this much on data neither model trained on.
    tolerance: float = Field(0.01, ge=0.0)
    compare_metric: str = "roc_auc"
    # Fewer shared holdout rows than this cannot tell two models apart reliably.
    min_shared_rows: int = Field(20, ge=1)


class CloudConfig(BaseModel):
    """One cloud: the store the toolkit publishes to, and the model servers that serve from it."""

    url: str
    # True: reach the store through the local emulator that `mct emulators up` started.
    emulator: bool = False
    # S3-compatible endpoint or GCS host; None means the provider's own (or its env variable).
    endpoint: str | None = None
    # The cloud's model servers, as the router reaches them.
    serving_urls: list[str] = Field(default_factory=list)


def _emulated_clouds() -> dict[str, CloudConfig]:
    return {
        "aws": CloudConfig(url="s3://mct-aws", emulator=True, serving_urls=["http://127.0.0.1:8001"]),
        "gcp": CloudConfig(url="gs://mct-gcp", emulator=True, serving_urls=["http://127.0.0.1:8002"]),
        "azure": CloudConfig(url="az://mct-azure", emulator=True, serving_urls=["http://127.0.0.1:8003"]),
    }


class ServingSettings(BaseModel):
    """The model server (`mct serve`)."""

    # How often a server checks its cloud's pointer for a new version.
    poll_seconds: float = Field(5.0, gt=0)
    # Bearer token required on prediction routes (health routes stay open); None disables auth.
    token: str | None = None
    # The model a server serves when `mct serve` is not given `--model` (the one `mct demo` publishes).
    model: str = "breast_cancer"
    # The pointer a server follows, `models/MODEL/ALIAS.json` (what `mct publish` moves).
    alias: str = "champion"
    # Rows per prediction request and bytes per request body: larger requests get 413.
    max_batch_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)


class RouterSettings(BaseModel):
    """The router (`mct route`); engine-neutral, so the HAProxy engine can render the same semantics."""

    # A misspelt key under [router] is an error, not a silently ignored setting.
    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # How to choose among the available backends of the preferred tier: round_robin, weighted,
    # least_outstanding (power of two choices) or peak_ewma (latency-aware). Clouds differ in latency,
    # and peak EWMA moves traffic off a cloud that turns slow within seconds, hence the default.
    policy: str = "peak_ewma"
    # Priority tier per cloud, 0 preferred: a tier takes traffic only while no backend of a lower tier is
    # available. Clouds not listed are tier 0.
    tiers: dict[str, int] = Field(default_factory=dict)
    # Relative share per cloud: `weighted` splits traffic by it, the power-of-two-choices policies divide
    # a backend's load by it. Clouds not listed weigh 1.
    weights: dict[str, float] = Field(default_factory=dict)
    # Active health checks: GET this path on every backend; a 2xx is a pass.
    health_path: str = "/v2/health/ready"
    # One probe a second finds a dead cloud within about two seconds, at a negligible load.
    health_interval_seconds: float = Field(1.0, gt=0)
    # A readiness answer takes milliseconds; half a second tells a frozen server from a busy one.
    health_timeout_seconds: float = Field(0.5, gt=0)
    # Two probes in a row either way: a single lost probe neither takes a backend out nor brings it back.
    healthy_threshold: int = Field(2, ge=1)
    unhealthy_threshold: int = Field(2, ge=1)
    # Passive outlier ejection: this many failed tries in a row (connection error, timeout, 5xx) eject a
    # backend; Envoy's default for consecutive 5xx.
    eject_after_failures: int = Field(5, ge=1)
    # The first ejection lasts this long, each ejection after a failed comeback twice as long, up to the
    # maximum: a broken backend costs one failed try per back-off period, a flapping one is let back soon.
    eject_base_seconds: float = Field(5.0, gt=0)
    eject_max_seconds: float = Field(60.0, gt=0)
    # Never eject more than this share of the backends (at least one): a fault that hits every backend
    # (a bad model, a bad request pattern) must not empty the pool.
    max_ejected_percent: int = Field(50, ge=0, le=100)
    # Tries after the first, each on a backend not tried yet: two cover the three default clouds.
    max_retries: int = Field(2, ge=0)
    # One try (connect, send, answer) gets this long before the next backend is tried: far above a batch
    # prediction (tens of milliseconds), far below a client's patience.
    per_try_timeout_seconds: float = Field(2.0, gt=0)
    # Retry budget: retries and hedges may add this percentage to the requests of the last ten seconds,
    # plus a floor per second so that a quiet router can still retry (Linkerd's defaults). A sick cloud
    # then cannot multiply the load on the healthy ones.
    retry_budget_percent: float = Field(20.0, ge=0)
    retry_budget_min_per_second: float = Field(10.0, ge=0)
    # Backend answers retried on another backend; every 5xx also counts towards ejection. 4xx never retry.
    retry_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503, 504])
    # Hedging, off by default: when the first try has not answered after this long, a second try goes to
    # another backend and the first good answer wins. It spends retry budget.
    hedge_after_seconds: float | None = Field(None, gt=0)
    # Bearer token of the admin API (/router/*, /metrics); without one the admin API is off. Prefer
    # MCT_ROUTER__ADMIN_TOKEN or --admin-token to writing it in a file.
    admin_token: str | None = None
    # Listen with SO_REUSEPORT, so that a new router can take over the port before this one stops: start
    # the new one with the same setting, then SIGTERM the old one, which drains (a graceful upgrade).
    reuse_port: bool = False
    # Which engine routes: `builtin` (the asyncio proxy in mct) or `haproxy` (the same configuration
    # rendered as haproxy.cfg, HAProxy supervised by `mct route`): see "Scaling out" in the README.
    engine: Literal["builtin", "haproxy"] = "builtin"
    # A second port that serves Prometheus metrics at /metrics without the admin token (for a scraper
    # on a private network); off by default: /metrics on the router's port needs the token.
    metrics_port: int | None = Field(None, ge=1, le=65535)


class Settings(BaseSettings):
    """Every setting of the toolkit, typed and validated in one place."""

    model_config = SettingsConfigDict(env_prefix="MCT_", env_nested_delimiter="__", extra="forbid")

    home: Path = DEFAULT_HOME
    tracking_uri: str | None = None
    experiment: str = "mct"
    training: TrainingDefaults = TrainingDefaults()
    promotion: PromotionPolicy = PromotionPolicy()
    clouds: dict[str, CloudConfig] = Field(default_factory=_emulated_clouds)
    serving: ServingSettings = ServingSettings()
    router: RouterSettings = RouterSettings()

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return home.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))
        user_file = TomlConfigSettingsSource(settings_cls, toml_file)
        # The data directory is itself a setting: find it as the settings will, then read its file below the rest.
        given = getattr(init_settings, "init_kwargs", {}).get("home")
        home = given or env_settings().get("home") or user_file().get("home")
        data_file = TomlConfigSettingsSource(settings_cls, data_config_file(Path(home or DEFAULT_HOME)))
        return (init_settings, env_settings, user_file, data_file)


def data_config_file(home: Path) -> Path:
    """The settings file the toolkit writes itself, in the data directory `home`."""
    return home.expanduser().resolve() / DEFAULT_CONFIG_FILE


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning any validation problem into one readable `ConfigError`."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV} points to {config_file}, which is not a file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the configuration: {exc}") from None
