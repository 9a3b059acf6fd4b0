"""Turn every failure into one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # Typer vendors Click
from typer.core import TyperGroup

from toolkit.errors import ToolkitError

__all__ = ["DEBUG_ENV", "ToolkitGroup"]

DEBUG_ENV = "MCT_DEBUG"


class ToolkitGroup(TyperGroup):
    """The root command group: runs a command and maps its errors to `error: ...` and an exit code.

    Exit codes: 0 success, 1 a refusal or failure on the merits, 2 input to correct, 130 interrupted.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "mct"
            _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
        except typer.TyperException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except typer.Abort:
            _fail("aborted", 1)
        except ToolkitError as exc:
            _fail(str(exc), exc.exit_code)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see where)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)
