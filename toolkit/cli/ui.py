"""`mct ui`: the MLflow UI on the toolkit's tracking store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.console import console
from toolkit.config import load_settings
from toolkit.errors import ConfigError

__all__ = ["ui_command"]


def ui_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5000,
) -> None:
    """Start `mlflow ui` on the embedded store (or MLFLOW_TRACKING_URI): runs, plots, models, aliases."""
    settings = load_settings()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    if uri and uri.startswith(("http://", "https://")):
        raise ConfigError(f"the tracking store is a server already: open {uri} in a browser")
    if not uri:
        database = settings.home / "mlflow.db"
        if not database.is_file():
            raise ConfigError(f"no tracking store at {database} yet: run `mct demo` or `mct train` first")
        uri = f"sqlite:///{database.as_posix()}"
    mlflow = Path(sys.executable).with_name("mlflow")
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it)")
    command = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    try:
        code = subprocess.call(command)  # a child, in our process group: Ctrl-C reaches it too
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
