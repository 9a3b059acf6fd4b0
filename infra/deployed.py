"""Record the deployed clouds in the toolkit's own settings file, so `mct publish` and `mct route` use them.

`mct infra up` writes each cloud's bucket URL and service URL to `mct.toml` in the data directory (see
`toolkit.config.data_config_file`); `mct infra destroy` takes the cloud out again. The file holds only
`[clouds.*]` tables; like any `[clouds]` settings, they replace the embedded emulated clouds, and the
user's own `mct.toml` and `MCT_*` variables still override them.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from toolkit.config import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, CloudConfig, data_config_file
from toolkit.errors import ConfigError

__all__ = ["deployed_clouds", "forget_deployment", "record_deployment"]

HEADER = (
    "# Written by `mct infra up` and `mct infra destroy`: the clouds deployed with Pulumi (bucket and service URLs).\n"
    "# Your own mct.toml and MCT_* variables override these settings; edit those, not this file.\n"
)


def deployed_clouds(home: Path) -> dict[str, CloudConfig]:
    """The clouds recorded in the data directory's settings file (none when it does not exist)."""
    document = _read(_file(home))
    return {name: CloudConfig.model_validate(cloud) for name, cloud in document.get("clouds", {}).items()}


def record_deployment(home: Path, cloud: str, bucket_url: str, service_url: str) -> Path:
    """Point `cloud` at its deployed bucket and service; returns the settings file."""
    clouds = deployed_clouds(home)
    clouds[cloud] = CloudConfig(url=bucket_url, emulator=False, serving_urls=[service_url])
    return _write(_file(home), clouds)


def forget_deployment(home: Path, cloud: str) -> Path | None:
    """Take `cloud` out of the recorded clouds; the file goes when none is left. Returns it, or None."""
    path = _file(home)
    clouds = deployed_clouds(home)
    if cloud not in clouds:
        return None
    del clouds[cloud]
    if clouds:
        return _write(path, clouds)
    path.unlink()
    return path


def _file(home: Path) -> Path:
    path = data_config_file(home)
    user_file = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)).expanduser().resolve()
    if path == user_file:
        raise ConfigError(
            f"the data directory holds your own settings file {path}: mct infra would overwrite it; "
            "set MCT_HOME to another directory"
        )
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    others = sorted(set(document) - {"clouds"})
    if others:
        raise ConfigError(
            f"{path} is written by mct infra and holds only [clouds]: move {', '.join(others)} to ./mct.toml"
        )
    return document


def _write(path: Path, clouds: dict[str, CloudConfig]) -> Path:
    lines = [HEADER]
    for name, cloud in sorted(clouds.items()):
        lines.append(f"\n[clouds.{name}]\n")
        for key, value in cloud.model_dump(exclude_none=True).items():
            # JSON's strings, booleans and arrays of strings are valid TOML.
            lines.append(f"{key} = {json.dumps(value)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".toml.tmp")
    scratch.write_text("".join(lines))
    scratch.replace(path)
    return path
