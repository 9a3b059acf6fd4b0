"""Terminal output: Rich tables for people on stdout, progress on stderr, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["console", "format_metric", "print_json", "progress_bar", "status_console"]

# Piped output has no terminal width to follow; 80 columns would fold the wider tables.
PIPED_WIDTH = 120

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
status_console = Console(stderr=True, highlight=False)


def print_json(document: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    print(json.dumps(document, indent=2, default=str))


def format_metric(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@contextmanager
def progress_bar(description: str) -> Iterator[Any]:
    """A progress bar on stderr; yields a callback taking (done, total)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=status_console, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance
