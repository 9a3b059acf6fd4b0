"""Settings: embedded defaults, then mct.toml, then MCT_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.config import load_settings
from toolkit.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MCT_HOME", "MCT_CONFIG", "MCT_TRAINING__N_JOBS", "MCT_PROMOTION__TOLERANCE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == tmp_path / ".mct"
    assert settings.training.cv_folds == 5
    assert settings.promotion.min_metrics == {"roc_auc": 0.8}


def test_file_overrides_defaults_and_environment_overrides_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mct.toml").write_text(
        'home = "state"\n[training]\ncv_folds = 3\n[promotion]\ntolerance = 0.05\nmin_metrics = { roc_auc = 0.9 }\n'
    )
    monkeypatch.setenv("MCT_PROMOTION__TOLERANCE", "0.02")
    settings = load_settings()
    assert settings.home == tmp_path / "state"
    assert settings.training.cv_folds == 3
    assert settings.promotion.tolerance == 0.02
    assert settings.promotion.min_metrics == {"roc_auc": 0.9}


def test_mct_config_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("experiment = 'churn'\n")
    monkeypatch.setenv("MCT_CONFIG", str(other))
    assert load_settings().experiment == "churn"
    monkeypatch.setenv("MCT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[training]\ncv_folds = 1\n", "invalid setting training.cv_folds"),
        ("colour = 'blue'\n", "invalid setting colour"),
        ("[training\n", "cannot read the configuration"),
    ],
)
def test_invalid_settings_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "mct.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings()
