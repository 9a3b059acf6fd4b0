"""Settings: embedded defaults, overridden by `mct.toml`, overridden by `MCT_*` environment variables.

The file is `./mct.toml`, or the path in `MCT_CONFIG`. Nested keys use `__` in the environment,
e.g. `MCT_PROMOTION__TOLERANCE=0.02` or `MCT_TRAINING__CV_FOLDS=3`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    "load_settings",
]

CONFIG_FILE_ENV = "MCT_CONFIG"
DEFAULT_CONFIG_FILE = "mct.toml"


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
    max_batch_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)


class RouterSettings(BaseModel):
    """The router (`mct route`); engine-neutral, so the HAProxy engine can render the same semantics."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class Settings(BaseSettings):
    """Every setting of the toolkit, typed and validated in one place."""

    model_config = SettingsConfigDict(env_prefix="MCT_", env_nested_delimiter="__", extra="forbid")

    home: Path = Path(".mct")
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
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))


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
