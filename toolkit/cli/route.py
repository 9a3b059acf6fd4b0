"""`mct route`: run the router in front of the clouds' model servers (the built-in engine).

`python -m toolkit.cli.route` runs the same command without importing the rest of the toolkit, so that
a supervisor restarts a router in a fraction of a second.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from serving.router.app import run_router
from serving.router.config import RouterFlags, load_router_config
from serving.router.policies import DEFAULT_POLICY, policy_names
from toolkit.cli.console import print_json
from toolkit.cli.errors import ToolkitGroup
from toolkit.errors import ConfigError

__all__ = ["main", "route_command"]

POLICY_HELP = "Balancing policy: " + ", ".join(
    f"{name} (default)" if name == DEFAULT_POLICY else name for name in policy_names()
)


def route_command(
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            metavar="NAME=URL",
            help="A model server, e.g. aws=http://127.0.0.1:8001; repeatable (a name twice: several URLs of "
            "one cloud). Replaces the clouds' serving_urls from the configuration.",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (router.host; 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (router.port; 8080).")] = None,
    policy: Annotated[str | None, typer.Option(help=POLICY_HELP + ".")] = None,
    tier: Annotated[
        list[str] | None,
        typer.Option("--tier", metavar="CLOUD=N", help="Priority tier of a cloud, 0 preferred; repeatable."),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option("--weight", metavar="CLOUD=W", help="Relative weight of a cloud (default 1); repeatable."),
    ] = None,
    per_try_timeout: Annotated[
        float | None, typer.Option(help="Seconds one try may take before another backend is tried (2).")
    ] = None,
    max_retries: Annotated[int | None, typer.Option(help="Tries after the first, each on another backend (2).")] = None,
    hedge_after: Annotated[
        float | None, typer.Option(help="Seconds after which a slow try gets a twin on another backend (off).")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token of the admin API (/router/status, drain, /metrics); prefer MCT_ROUTER__ADMIN_TOKEN."
        ),
    ] = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port",
            help="Share the port with SO_REUSEPORT for a graceful upgrade: start the new router with this flag, "
            "then SIGTERM the old one (also started with it); it drains and exits (router.reuse_port).",
        ),
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="builtin (default: the asyncio proxy in mct) or haproxy (the same configuration on HAProxy, "
            "supervised by this command; router.engine).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Also serve Prometheus /metrics on this port, without the token (off).")
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="With --engine haproxy: print the rendered haproxy.cfg and exit."),
    ] = False,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the effective configuration as JSON and exit.")
    ] = False,
) -> None:
    """Route prediction requests to the clouds' model servers, failing over between them.

    Settings come from the router section and the clouds' serving_urls in mct.toml (and MCT_ROUTER__*
    variables); flags override them. Health checks, ejection, retries on another backend within a retry budget,
    priority tiers and panic mode keep requests answered while one cloud can answer. SIGHUP reloads the
    configuration; SIGTERM stops listening and drains (each connection closes after its next answer).
    """
    flags = RouterFlags(
        host=host,
        port=port,
        backends=tuple(backend or ()),
        policy=policy,
        weights=tuple(weight or ()),
        tiers=tuple(tier or ()),
        admin_token=admin_token,
        reuse_port=reuse_port or None,
        engine=engine,
        metrics_port=metrics_port,
        per_try_timeout_seconds=per_try_timeout,
        max_retries=max_retries,
        hedge_after_seconds=hedge_after,
    )
    config = load_router_config(flags)
    if show_config:
        print_json(config.describe())
        return
    if print_config:
        if config.engine != "haproxy":
            raise ConfigError("--print-config shows HAProxy's configuration: add --engine haproxy")
        from serving.router.haproxy.engine import printable_config

        sys.stdout.write(printable_config(config))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mct route: %(message)s", stream=sys.stderr)
    if config.engine == "haproxy":
        from serving.router.haproxy.engine import run_haproxy_router

        run_haproxy_router(config, reload_config=lambda: load_router_config(flags))
    else:
        run_router(config, reload_config=lambda: load_router_config(flags))


def main() -> None:
    """`python -m toolkit.cli.route ARGS`: `mct route ARGS`, with the same error handling and exit codes."""
    standalone = typer.Typer(cls=ToolkitGroup, add_completion=False, pretty_exceptions_enable=False)
    standalone.callback()(lambda: None)  # a group, so that errors are reported as `mct` reports them
    standalone.command("route")(route_command)
    standalone(args=["route", *sys.argv[1:]], prog_name="mct")


if __name__ == "__main__":
    main()
