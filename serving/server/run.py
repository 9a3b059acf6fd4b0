"""Run one model server: the cloud's store, the reloader, the app, on uvicorn.

One process, one event loop: the model, the polling task and the metrics live in it, so a reload is
one swap that every request sees and `/metrics` tells the whole story. uvicorn runs on uvloop with the
httptools parser (both installed with the toolkit); one worker process meets the benchmark's goal
(see bench/server_vs_mlflow.py), so several workers, each with its own model and counters, would only
add moving parts. Scale out with more server processes behind the router instead.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from serving.server.app import ServerOptions, create_app
from serving.server.metrics import ServerMetrics
from serving.server.reloader import ModelReloader
from toolkit.clouds import cloud_store, select_clouds
from toolkit.config import Settings
from toolkit.errors import ConfigError

__all__ = ["listen_address", "run_server"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def listen_address(settings: Settings, cloud: str, host: str | None, port: int | None) -> tuple[str, int]:
    """Where to listen: the flags, else the cloud's first serving URL (what the router expects), else 127.0.0.1:8000."""
    urls = select_clouds(settings, [cloud])[cloud].serving_urls
    configured = urlsplit(urls[0]) if urls else None
    return (
        host or (configured.hostname if configured and configured.hostname else DEFAULT_HOST),
        port if port is not None else (configured.port if configured and configured.port else DEFAULT_PORT),
    )


def run_server(
    settings: Settings,
    cloud: str,
    *,
    model: str | None = None,
    host: str | None = None,
    port: int | None = None,
    poll_seconds: float | None = None,
    token: str | None = None,
    drill_mode: bool = False,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve `cloud`'s champion until interrupted; None means the setting (or the cloud's serving URL).

    The store may be unreachable at first: the server then starts, not ready, and keeps polling.
    """
    host, port = listen_address(settings, cloud, host, port)
    poll_seconds = poll_seconds if poll_seconds is not None else settings.serving.poll_seconds
    if poll_seconds <= 0:
        raise ConfigError(f"--poll-seconds must be positive, got {poll_seconds}")
    if log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS).lower()}, got {log_level!r}")
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    reloader = ModelReloader(
        lambda: cloud_store(settings, cloud),
        model or settings.serving.model,
        alias=settings.serving.alias,
        poll_seconds=poll_seconds,
        max_rows=settings.serving.max_batch_rows,
        metrics=ServerMetrics(),
    )
    server_options = ServerOptions(
        cloud=cloud,
        token=token or settings.serving.token,
        drill_mode=drill_mode,
        max_body_bytes=settings.serving.max_body_bytes,
    )
    app = create_app(reloader, server_options)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed
            access_log=access_log,
            log_level=log_level.lower(),
            server_header=False,
        )
    except SystemExit as exc:
        if exc.code == STARTUP_FAILURE:  # uvicorn has logged why, e.g. the address is in use
            raise ConfigError(f"cannot serve on {host}:{port} (see above): choose another --host or --port") from None
        raise
