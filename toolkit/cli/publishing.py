"""`mct publish` and `mct verify`: replicate a registered model's bundle to the clouds and check it."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli.console import console, print_json, status_console
from toolkit.clouds import cloud_stores
from toolkit.config import load_settings
from toolkit.errors import ConfigError
from toolkit.publishing.publish import CloudPublish, publish_bundle
from toolkit.publishing.verify import CloudVerification, verify_clouds

__all__ = ["parse_model_ref", "publish_command", "render_publish", "render_verify", "verify_command"]

CloudsOption = Annotated[
    str | None, typer.Option("--to", help="Comma-separated clouds (default: every configured cloud).")
]


def parse_model_ref(ref: str) -> tuple[str, str, str]:
    """`NAME`, `NAME@ALIAS` or `NAME/VERSION` -> (name, registry ref, pointer alias)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        registry_ref, pointer_alias = f"@{alias}", alias
    elif "/" in ref:
        name, registry_ref = ref.split("/", 1)
        pointer_alias = "champion"
    else:
        name, registry_ref, pointer_alias = ref, "@champion", "champion"
    if not name or not registry_ref.strip("@"):
        raise ConfigError(f"model reference {ref!r} is not NAME, NAME@ALIAS or NAME/VERSION")
    return name, registry_ref, pointer_alias


def _clouds(option: str | None) -> list[str] | None:
    return [name.strip() for name in option.split(",")] if option else None


def publish_command(
    model: Annotated[str, typer.Argument(help="NAME (its champion), NAME@ALIAS or NAME/VERSION.")],
    to: CloudsOption = None,
    alias: Annotated[str | None, typer.Option(help="Pointer to move (default: the alias, or champion).")] = None,
    allow_partial: Annotated[bool, typer.Option(help="Exit 0 even if some clouds failed.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Publish a registered model's bundle to every cloud: files, manifest, read-back, then the pointer.

    Version objects are immutable; the pointer moves only after every object verified, with the
    provider's precondition. A cloud that fails keeps its old pointer; running again resumes.
    """
    from toolkit.publishing.export import export_bundle
    from toolkit.tracking.store import open_store

    settings = load_settings()
    name, registry_ref, pointer_alias = parse_model_ref(model)
    stores = cloud_stores(settings, _clouds(to))
    with tempfile.TemporaryDirectory(prefix="mct-publish-") as scratch:
        with status_console.status(f"exporting {name} {registry_ref} from MLflow"):
            bundle = export_bundle(open_store(settings), name, registry_ref, Path(scratch))
        with status_console.status(f"publishing {name} v{bundle.manifest.version} to {', '.join(stores)}"):
            results = publish_bundle(bundle, stores, alias=alias or pointer_alias)
    if json_output:
        print_json({"model": name, "version": bundle.manifest.version, "clouds": [asdict(r) for r in results]})
    else:
        render_publish(name, bundle.manifest.version, results)
    if any(not result.ok for result in results) and not allow_partial:
        raise typer.Exit(1)


def verify_command(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Pointer to verify.")] = "champion",
    cloud: CloudsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Check every cloud: pointer -> manifest -> each object's SHA-256, and the same version everywhere.

    Exit code 1 on a missing object, a hash mismatch (tampering or corruption) or drift between clouds.
    """
    settings = load_settings()
    stores = cloud_stores(settings, _clouds(cloud))
    with status_console.status(f"verifying {model} on {', '.join(stores)}"):
        results = verify_clouds(stores, model, alias)
    if json_output:
        print_json({"model": model, "alias": alias, "clouds": [asdict(result) for result in results]})
    else:
        render_verify(model, results)
    if any(not result.ok for result in results):
        raise typer.Exit(1)


def render_publish(name: str, version: str, results: list[CloudPublish]) -> None:
    """One row per cloud: what was uploaded, skipped, and what happened to the pointer."""
    table = Table("cloud", "uploaded", "already there", "pointer", "status", title=f"publish {name} v{version}")
    for result in results:
        status = "[green]ok[/]" if result.ok else f"[red]failed[/]: {result.error}"
        table.add_row(result.cloud, str(len(result.uploaded)), str(len(result.skipped)), result.pointer, status)
    console.print(table)


def render_verify(name: str, results: list[CloudVerification]) -> None:
    """One row per cloud: the version it serves, how many files were checked, and the verdict."""
    table = Table("cloud", "version", "files", "status", "problems", title=f"verify {name}")
    for result in results:
        colour = "green" if result.ok else "red"
        table.add_row(
            result.cloud,
            result.version or "-",
            str(result.files),
            f"[{colour}]{result.status}[/]",
            "; ".join(result.problems) or "-",
        )
    console.print(table)
