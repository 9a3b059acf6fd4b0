"""`mct infra preview|up|destroy|outputs`: the serving stack on AWS, GCP and Azure, through Pulumi.

Thin: the stacks, their checks and Pulumi's Automation API live in `infra/`; Pulumi's SDK is imported only
when one of these commands runs.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.table import Table

from toolkit.cli.console import console, print_json
from toolkit.config import data_config_file, load_settings
from toolkit.errors import ConfigError

if TYPE_CHECKING:
    from infra.automation import Action, StackReport

__all__ = ["infra_app"]

infra_app = typer.Typer(
    help="Provision the serving stack (model bucket + HTTPS service) on AWS, GCP and Azure with Pulumi.",
    no_args_is_help=True,
)

CloudOption = Annotated[str, typer.Option("--cloud", help="aws, gcp, azure or all.", show_default=False)]
StackOption = Annotated[
    str, typer.Option("--stack", metavar="NAME", help="Environment: the stacks are CLOUD-NAME, e.g. aws-dev.")
]
ImageOption = Annotated[
    str | None,
    typer.Option(help="Serving image to run, e.g. docker.io/acme/mct-serving:0.1.0; kept in the stack's config file."),
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the results as JSON (Pulumi's progress stays on stderr).")
]


@infra_app.command("preview")
def preview_command(
    cloud: CloudOption, stack: StackOption = "dev", image: ImageOption = None, json_output: JsonFlag = False
) -> None:
    """Show what `up` would create, change or delete on each stack; no resource is touched."""
    reports = _run("preview", cloud, stack, image)
    if json_output:
        print_json({"action": "preview", "stacks": [asdict(report) for report in reports]})
    else:
        _render_changes("preview", reports)
    _fail_if_any("preview", reports)


@infra_app.command("up")
def up_command(
    cloud: CloudOption, stack: StackOption = "dev", image: ImageOption = None, json_output: JsonFlag = False
) -> None:
    """Create or update the stacks, and record their bucket and service URLs for `mct publish` and `mct route`.

    The URLs go to mct.toml in the data directory; your own mct.toml still overrides them.
    """
    reports = _run("up", cloud, stack, image)
    config_file = data_config_file(load_settings().home)
    deployed = [report for report in reports if report.ok]
    if json_output:
        print_json({"action": "up", "stacks": [asdict(report) for report in reports], "config_file": str(config_file)})
    else:
        _render_outputs("up", reports)
        if deployed:
            console.print(f"recorded in {config_file}: `mct publish` and `mct route` now use the deployed clouds")
            console.print(
                "the services answer predictions once `mct publish MODEL` has put a champion in their buckets"
            )
        for report in deployed:
            hint = _next_step(report)
            if hint:
                console.print(hint)
    _fail_if_any("up", reports)


@infra_app.command("destroy")
def destroy_command(
    cloud: CloudOption,
    stack: StackOption = "dev",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Delete every resource of the stacks, the model buckets and their contents included.

    The clouds are taken out of mct.toml in the data directory. The models come back with `mct publish`.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("destroy deletes the stacks' resources and their models: pass --yes to confirm")
        typer.confirm(f"Delete every resource of the {stack} stacks of {cloud}, models included?", abort=True)
    reports = _run("destroy", cloud, stack, None)
    if json_output:
        print_json({"action": "destroy", "stacks": [asdict(report) for report in reports]})
    else:
        _render_changes("destroy", reports)
    _fail_if_any("destroy", reports)


@infra_app.command("outputs")
def outputs_command(cloud: CloudOption, stack: StackOption = "dev", json_output: JsonFlag = False) -> None:
    """Print each stack's outputs: service URL and host name, bucket URL and endpoint."""
    reports = _run("outputs", cloud, stack, None)
    if json_output:
        print_json({"action": "outputs", "stacks": [asdict(report) for report in reports]})
    else:
        _render_outputs("outputs", reports)
    _fail_if_any("outputs", reports)


def _run(action: Action, cloud: str, stack: str, image: str | None) -> list[StackReport]:
    from infra.prerequisites import check_pulumi_sdk

    check_pulumi_sdk()
    from infra.automation import Deployment, select_targets

    deployment = Deployment(
        load_settings().home,
        select_targets(cloud, stack),
        image=image,
        on_output=_stream,
        color="always" if sys.stderr.isatty() else "never",
    )
    return deployment.run(action)


def _stream(line: str) -> None:
    """Pulumi's progress, as it comes, on stderr: stdout stays for the results."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _fail_if_any(action: Action, reports: list[StackReport]) -> None:
    from infra.automation import failure

    error = failure(action, reports)
    if error:
        raise error


def _render_changes(action: str, reports: list[StackReport]) -> None:
    table = Table("stack", "status", "resources", title=f"pulumi {action}")
    for report in reports:
        changes = ", ".join(f"{operation} {count}" for operation, count in sorted(report.changes.items())) or "-"
        table.add_row(report.stack, _status(report), changes)
    console.print(table)


def _render_outputs(action: str, reports: list[StackReport]) -> None:
    table = Table("stack", "status", "service URL", "bucket URL", title=f"pulumi {action}")
    for report in reports:
        outputs = report.outputs
        table.add_row(report.stack, _status(report), outputs.get("serviceUrl", "-"), outputs.get("bucketUrl", "-"))
    console.print(table)


def _status(report: StackReport) -> str:
    if not report.ok:
        return f"[red]failed[/]: {report.error}"
    return "[green]ok[/]" if report.deployed else "not deployed"


def _next_step(report: StackReport) -> str | None:
    """What the cloud still needs from the user after its first deployment."""
    outputs: dict[str, Any] = report.outputs
    if report.cloud == "aws":
        domain = urlsplit(str(outputs.get("serviceUrl", ""))).hostname
        target = outputs.get("serviceHostname")
        return f"aws: point {domain} at {target} (a CNAME or alias record): the listener's certificate names {domain}"
    if report.cloud == "azure":
        account = (urlsplit(str(outputs.get("bucketEndpoint", ""))).hostname or "").split(".")[0]
        return (
            f"azure: `mct publish` needs AZURE_STORAGE_CONNECTION_STRING of the storage account {account} "
            f"(az storage account show-connection-string --name {account})"
        )
    return None
