"""`mct sync SRC DST`: make one store hold what another holds, moving only what changed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

from toolkit.cli.console import console, print_json, status_console
from toolkit.clouds import cloud_store
from toolkit.config import Settings, load_settings
from toolkit.storage import ObjectStore, open_store
from toolkit.storage.sync import DEFAULT_TRANSFERS, sync

__all__ = ["resolve_location", "sync_command"]


def resolve_location(settings: Settings, location: str) -> ObjectStore:
    """A store from a URL (`s3://b/p`, `gs://`, `az://`, `file://`, a path) or `CLOUD:prefix`."""
    name, sep, rest = location.partition(":")
    if sep and name in settings.clouds and not rest.startswith("//"):
        return cloud_store(settings, name, rest)
    return open_store(location)


def sync_command(
    source: Annotated[str, typer.Argument(help="Source: URL, path, or CLOUD:prefix (e.g. aws:models).")],
    destination: Annotated[str, typer.Argument(help="Destination, same forms.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove destination objects absent from the source.")
    ] = False,
    transfers: Annotated[int, typer.Option(min=1, max=64, help="Parallel transfers.")] = DEFAULT_TRANSFERS,
    checksum: Annotated[
        bool, typer.Option("--checksum", help="Never treat equal sizes as unchanged without a hash to compare.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Copy new and changed objects between any two of S3, GCS, Azure Blob and local folders.

    Unchanged objects are skipped by content hash (SHA-256 metadata, or the provider's MD5), so a
    second sync of an unchanged tree moves no bytes. Exit code 1 if any object failed.
    """
    settings = load_settings()
    source_store, destination_store = resolve_location(settings, source), resolve_location(settings, destination)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=status_console, transient=True) as progress:
        task = progress.add_task("syncing", total=None)

        def advance(done: int, total: int, copied: int) -> None:
            progress.update(task, completed=done, total=total, description=f"syncing ({copied / 1e6:.1f} MB copied)")

        summary = sync(
            source_store,
            destination_store,
            delete=delete,
            dry_run=dry_run,
            transfers=transfers,
            checksum=checksum,
            on_progress=advance,
        )
    if json_output:
        document = asdict(summary)
        document.update({key: len(document[key]) for key in ("copied", "skipped", "deleted")})
        print_json(document)
    else:
        verb = "would copy" if dry_run else "copied"
        console.print(
            f"{summary.source} -> {summary.destination}: {verb} {len(summary.copied)} "
            f"({summary.bytes_copied / 1e6:.1f} MB), skipped {len(summary.skipped)} unchanged, "
            f"{'would delete' if dry_run else 'deleted'} {len(summary.deleted)}, in {summary.seconds:.2f} s"
        )
        for key, error in summary.failed.items():
            console.print(f"[red]failed[/] {key}: {error}")
    if not summary.ok:
        raise typer.Exit(1)
