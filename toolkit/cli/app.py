"""The `mct` application: every command group, composed in one place."""

from __future__ import annotations

import os
import warnings
from typing import Annotated

import typer

from toolkit import __version__
from toolkit.cli.demo import demo_command
from toolkit.cli.drill import drill_command
from toolkit.cli.emulators import emulators_app
from toolkit.cli.errors import ToolkitGroup
from toolkit.cli.infra import infra_app
from toolkit.cli.models import models_app
from toolkit.cli.promotion import promote_command, rollback_command
from toolkit.cli.publishing import publish_command, verify_command
from toolkit.cli.route import route_command
from toolkit.cli.router_admin import router_app
from toolkit.cli.serve import serve_command
from toolkit.cli.storage import sync_command
from toolkit.cli.train import train_command
from toolkit.cli.ui import ui_command
from toolkit.training.options import SEARCH_SPACE_HELP

__all__ = ["app", "main"]

app = typer.Typer(
    cls=ToolkitGroup,
    name="mct",
    help="Multi-cloud toolkit: train, register, promote and publish logistic-regression models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train", epilog=SEARCH_SPACE_HELP)(train_command)
app.command("promote")(promote_command)
app.command("rollback")(rollback_command)
app.command("publish")(publish_command)
app.command("verify")(verify_command)
app.command("sync")(sync_command)
app.command("serve")(serve_command)
app.command("route")(route_command)
app.command("demo")(demo_command)
app.command("ui")(ui_command)
app.command("drill")(drill_command)
app.add_typer(models_app, name="models")
app.add_typer(emulators_app, name="emulators")
app.add_typer(infra_app, name="infra")
app.add_typer(router_app, name="router")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mct {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Multi-cloud toolkit: train, register, promote and publish logistic-regression models."""


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Library deprecation chatter is for the toolkit's developers, not its users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    app()
