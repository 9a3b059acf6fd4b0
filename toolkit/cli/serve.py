"""`mct serve`: a model server for one cloud's published champion."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.config import load_settings

__all__ = ["serve_command"]


def serve_command(
    cloud: Annotated[str, typer.Option(help="Configured cloud whose store to serve from (e.g. aws).")],
    model: Annotated[str | None, typer.Option(help="Model name (default: serving.model).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: from the cloud's serving URL).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: from the cloud's serving URL, else 8000).")] = None,
    poll_seconds: Annotated[
        float | None, typer.Option(help="How often to check the pointer (default: serving.poll_seconds).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token for prediction routes; prefer MCT_SERVING__TOKEN (not in ps).")
    ] = None,
    drill_mode: Annotated[bool, typer.Option(help="Enable POST /drill/fault to inject errors and delay.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve the champion published to a cloud: MLflow scoring and Open Inference Protocol v2.

    Every file is checked against the manifest's SHA-256 before loading; the pointer is polled and a new
    version swapped in without dropping requests. Health routes: /ping, /v2/health/live, /v2/health/ready.
    """
    # Imported here: the server's web stack is not needed by the other commands.
    from serving.server.run import run_server

    run_server(
        load_settings(),
        cloud,
        model=model,
        host=host,
        port=port,
        poll_seconds=poll_seconds,
        token=token,
        drill_mode=drill_mode,
        log_level=log_level,
        access_log=access_log,
    )
