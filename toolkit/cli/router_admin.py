"""`mct router status|drain|undrain`: look at and steer a running router, whichever engine runs it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from serving.router.admin_client import AdminClient
from toolkit.cli.console import console, print_json
from toolkit.config import load_settings

__all__ = ["router_app"]

router_app = typer.Typer(
    help="Status, drain and undrain of a running router (`mct route`, either engine), through its admin API.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None, typer.Option("--url", help="The router (default: http://router.host:router.port from the config).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin token (default: router.admin_token, MCT_ROUTER__ADMIN_TOKEN).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@router_app.command("status")
def status_command(url: UrlOption = None, token: TokenOption = None, json_output: JsonFlag = False) -> None:
    """Each backend's state (healthy, unhealthy, ejected, drained), requests in flight, latency, last error."""
    document = _client(url, token).status()
    if json_output:
        print_json(document)
        return
    console.print(
        f"engine {document.get('engine', 'builtin')}, pid {document.get('pid')}, policy {document['policy']}, "
        f"available: {', '.join(document['available']) or 'none'}"
        + (" [red](panic)[/]" if document.get("panic") else "")
    )
    table = Table("backend", "cloud", "tier", "state", "in flight", "latency ms", "ejections", "last error")
    for backend in document["backends"]:
        state = backend["state"]
        colour = {"healthy": "green", "drained": "yellow"}.get(state, "red")
        table.add_row(
            backend["name"],
            backend["cloud"],
            str(backend["tier"]),
            f"[{colour}]{state}[/]",
            str(backend["in_flight"]),
            f"{backend['ewma_latency_ms']:.1f}",
            str(backend["ejections"]),
            backend.get("last_error") or backend.get("last_check_error") or "-",
        )
    console.print(table)


@router_app.command("drain")
def drain_command(
    name: Annotated[str, typer.Argument(help="A backend or a cloud (all its backends).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Send no new request to NAME; its requests in flight finish."""
    console.print(f"drained {', '.join(_client(url, token).set_drained(name, True))}")


@router_app.command("undrain")
def undrain_command(
    name: Annotated[str, typer.Argument(help="A backend or a cloud (all its backends).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Put NAME back in rotation."""
    console.print(f"undrained {', '.join(_client(url, token).set_drained(name, False))}")


def _client(url: str | None, token: str | None) -> AdminClient:
    router = load_settings().router
    return AdminClient(url or f"http://{router.host}:{router.port}", token or router.admin_token)
